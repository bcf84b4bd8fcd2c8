"""The last-known-good store: atomic writes, a faithful reload, and nothing served
that fails a check (signature, document, artefact presence and sha256)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from sidecar.policy.last_known_good import DigestMismatch, LastKnownGood
from sidecar.policy.signing import Signer, load_verifier
from tests.artefacts import temperature_artefact
from tests.fake_registry import new_signer, registry_doc, sign_policy


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    """A fresh key pair under tmp_path/keys."""
    return new_signer(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path, signer: Signer) -> LastKnownGood:
    """The store under tmp_path/state/policy, trusting signer's key."""
    return LastKnownGood(tmp_path / "state" / "policy", load_verifier(tmp_path / "keys/public.pem"))


@pytest.fixture
def artefact(tmp_path: Path) -> tuple[str, bytes]:
    sha = temperature_artefact(tmp_path / "cal.onnx")
    return sha, (tmp_path / "cal.onnx").read_bytes()


def saved(store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]) -> rpb.SignedPolicy:
    sha, data = artefact
    store.write_artefact(sha, [data[:100], data[100:]])
    signed = sign_policy(signer, registry_doc(sha), 3, time.time())
    store.save(signed)
    return signed


def leftovers(store: LastKnownGood) -> list[str]:
    return sorted(p.name for p in store.directory.rglob("*") if p.name.endswith(".tmp"))


def refused(store: LastKnownGood) -> list[Any]:
    """Why store.load() served nothing (it must serve nothing): the rejections logged."""
    with capture_logs() as logs:
        assert store.load() is None
    return [e["reason"] for e in logs if e["event"] == "policy.last_known_good_rejected"]


def test_saved_policy_reloads_verified(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """What was saved comes back byte for byte, parsed, with its artefact in place."""
    signed = saved(store, signer, artefact)
    stored = store.load()
    assert stored is not None
    assert stored.signed == signed
    assert stored.policy.revision == 3
    assert stored.policy.models["m"].calibrator.sha256 == artefact[0]
    assert store.artefact_path(artefact[0]).read_bytes() == artefact[1]
    assert leftovers(store) == []


def test_nothing_stored_loads_nothing_quietly(store: LastKnownGood) -> None:
    """A first start has no copy: None, and no rejection logged."""
    assert refused(store) == []


def test_failed_write_leaves_the_old_copy(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """A write that fails midway leaves the previous file whole and no temporary file."""
    saved(store, signer, artefact)
    before = store.artefact_path(artefact[0]).read_bytes()

    def failing() -> Iterator[bytes]:
        yield b"half an artefact"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.write_artefact(artefact[0], failing())
    assert store.artefact_path(artefact[0]).read_bytes() == before
    assert leftovers(store) == []
    assert store.load() is not None


def test_artefact_with_wrong_bytes_is_not_kept(store: LastKnownGood) -> None:
    """Bytes that do not hash to the sha256 asked for are refused and leave nothing."""
    with pytest.raises(DigestMismatch, match="sha256"):
        store.write_artefact("a" * 64, [b"not what the policy names"])
    assert not store.has_artefact("a" * 64)
    assert leftovers(store) == []


def test_temporaries_of_a_crash_are_removed_on_load(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """A temporary file a crash left behind is cleared, and the copy still loads."""
    saved(store, signer, artefact)
    (store.artefacts / ".x.onnx.1234.tmp").write_bytes(b"partial")
    (store.directory / ".signed-policy.pb.99.tmp").write_bytes(b"partial")
    assert store.load() is not None
    assert leftovers(store) == []


def test_tampered_document_is_not_served(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """A stored document altered on disk fails its signature and is ignored."""
    signed = saved(store, signer, artefact)
    signed.document = signed.document.replace(b'"t_high":0.9', b'"t_high":0.1')
    store.policy_path.write_bytes(signed.SerializeToString())
    assert refused(store) == ["signature"]


def test_copy_signed_by_another_key_is_not_served(
    tmp_path: Path, store: LastKnownGood, artefact: tuple[str, bytes]
) -> None:
    """A policy signed by a key other than the configured one is ignored."""
    saved(store, new_signer(tmp_path / "other"), artefact)
    assert refused(store) == ["signature"]


def test_corrupt_file_is_not_served(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """Bytes that are not a SignedPolicy are ignored, logged as corrupt."""
    saved(store, signer, artefact)
    store.policy_path.write_bytes(b"\xff\xff\xff garbage")
    assert refused(store) == ["corrupt"]


def test_missing_artefact_is_not_served(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """A policy whose artefact is gone is ignored."""
    saved(store, signer, artefact)
    store.artefact_path(artefact[0]).unlink()
    assert refused(store) == ["calibrator"]


def test_altered_artefact_is_not_served(
    store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """An artefact whose bytes no longer hash to the policy's sha256 is caught on load."""
    saved(store, signer, artefact)
    path = store.artefact_path(artefact[0])
    path.write_bytes(path.read_bytes() + b"\x00")
    assert refused(store) == ["calibrator"]


def test_prune_keeps_only_named_artefacts(
    tmp_path: Path, store: LastKnownGood, signer: Signer, artefact: tuple[str, bytes]
) -> None:
    """Artefacts the current policy does not name are deleted; named ones stay."""
    saved(store, signer, artefact)
    old = temperature_artefact(tmp_path / "old.onnx", temperature=2.0)
    store.write_artefact(old, [(tmp_path / "old.onnx").read_bytes()])
    assert store.prune({artefact[0]}) == [old]
    assert store.has_artefact(artefact[0])
    assert not store.has_artefact(old)
    assert store.load() is not None
