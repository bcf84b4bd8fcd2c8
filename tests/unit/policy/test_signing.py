"""Ed25519 signatures over canonical policy documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError, SignatureError
from sidecar.policy.signing import canonical, generate_key_pair, load_signer, load_verifier


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub"
    generate_key_pair(private, public)
    return private, public


def test_canonical_is_sorted_and_compact() -> None:
    """Key order and whitespace do not change the signed bytes."""
    assert canonical({"b": 1, "a": {"y": [1, 2], "x": "é"}}) == canonical(
        {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    )
    assert canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_signature_verifies_with_the_pair(keys: tuple[Path, Path]) -> None:
    """What the signer signs, the matching verifier accepts."""
    signer, verifier = load_signer(keys[0]), load_verifier(keys[1])
    document = canonical({"revision": 3})
    verifier.verify(document, signer.sign(document))
    assert signer.key_id == verifier.key_id


def test_altered_document_is_refused(keys: tuple[Path, Path]) -> None:
    """One changed byte fails verification, saying the policy was altered."""
    signer, verifier = load_signer(keys[0]), load_verifier(keys[1])
    signature = signer.sign(b'{"t_high":0.9}')
    with pytest.raises(SignatureError, match="altered"):
        verifier.verify(b'{"t_high":0.1}', signature)


def test_unsigned_document_is_refused(keys: tuple[Path, Path]) -> None:
    """An empty signature is refused as unsigned."""
    with pytest.raises(SignatureError, match="unsigned"):
        load_verifier(keys[1]).verify(b"{}", b"")


def test_other_key_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    """A signature by another registry's key does not verify."""
    generate_key_pair(tmp_path / "o.key", tmp_path / "o.pub")
    signature = load_signer(tmp_path / "o.key").sign(b"{}")
    with pytest.raises(SignatureError):
        load_verifier(keys[1]).verify(b"{}", signature)


def test_private_key_file_is_owner_only(keys: tuple[Path, Path]) -> None:
    """keygen writes the private key readable by its owner alone."""
    assert keys[0].stat().st_mode & 0o077 == 0


def test_wrong_key_files_fail_at_start_up(keys: tuple[Path, Path], tmp_path: Path) -> None:
    """A public key given as the signing key, or a non-PEM file, is a ConfigError."""
    with pytest.raises(ConfigError):
        load_signer(keys[1])
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(ConfigError, match="not a PEM"):
        load_verifier(tmp_path / "junk")
