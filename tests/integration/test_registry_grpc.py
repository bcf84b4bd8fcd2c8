"""The registry over real gRPC, on SQLite and on PostgreSQL: who may do what, two-person
approval, the emergency path, history, rollback, calibrators, Watch and the audit."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from sidecar.core.policy import parse_policy
from sidecar.policy.signing import load_verifier
from sidecar.registry.client import RegistryClient
from sidecar.registry.messages import policy_from_document
from sidecar.registry.model import Role
from tests.artefacts import policy_doc, temperature_artefact, write_policy
from tests.certs import Authority, Issued
from tests.integration.conftest import hitl_command
from tests.registry import BACKENDS, Registry, in_process, registry_policy, upload_artefact


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with in_process(request.param, tmp_path, refresh_seconds=0.5) as running:
        yield running


@pytest.fixture
def sha(registry: Registry, tmp_path: Path) -> str:
    return upload_artefact(registry, tmp_path / "cal.onnx")


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def refused(call: Any, code: grpc.StatusCode) -> str:
    """Run call; assert it fails with code; return the message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return str(error.details())


def propose(client: RegistryClient, doc: dict[str, Any], base: int, reason: str = "why") -> Any:
    return client.propose(policy_from_document(doc), reason, base)


def first_revision(registry: Registry, sha: str, **model: Any) -> None:
    with registry.client("alice") as alice, registry.client("bob") as bob:
        proposal = propose(alice, registry_policy(sha, **model), 0, "first policy")
        bob.approve(proposal.id, "looks right")


def test_first_policy_needs_an_approver(registry: Registry, sha: str) -> None:
    """The first policy waits PENDING (a new model widens) until an approver says yes."""
    with registry.client("alice") as alice, registry.client("bob") as bob:
        proposal = propose(alice, registry_policy(sha), 0)
        assert proposal.state == pb.PENDING
        assert list(proposal.widening) == ["models.m: a new model is automated"]
        refused(alice.get_policy, grpc.StatusCode.NOT_FOUND)
        approved = bob.approve(proposal.id, "checked the thresholds")
        assert (approved.state, approved.revision, approved.decided_by) == (pb.APPLIED, 1, "bob")
        head = alice.get_policy()
    assert (head.revision, head.proposed_by, head.approved_by) == (1, "alice", "bob")
    assert head.policy.models["m"].thresholds.t_high == pytest.approx(0.9)


def test_signed_head_verifies_and_parses(registry: Registry, sha: str) -> None:
    """GetPolicy's signed document verifies with the public key and is a valid policy."""
    first_revision(registry, sha)
    with registry.client("sid") as sidecar:
        signed = sidecar.get_policy().signed
    load_verifier(registry.keys.public).verify(signed.document, signed.signature)
    policy = parse_policy(json.loads(signed.document))
    assert policy.revision == signed.revision == 1
    assert policy.issued_at == pytest.approx(signed.issued_at, abs=1e-3)
    assert policy.models["m"].calibrator.name == "cal"


def test_self_approval_is_refused(registry: Registry, sha: str) -> None:
    """An approver cannot approve their own proposal; it stays pending."""
    with registry.client("carol") as carol:
        proposal = propose(carol, registry_policy(sha), 0)
        message = refused(lambda: carol.approve(proposal.id), grpc.StatusCode.PERMISSION_DENIED)
        assert "another approver" in message
        assert carol.proposals(pb.PENDING)[0].id == proposal.id


def test_roles_are_enforced(registry: Registry, sha: str) -> None:
    """Viewer and sidecar cannot propose; an operator cannot approve; a sidecar cannot
    read the history."""
    doc = registry_policy(sha)
    with registry.client("vic") as vic, registry.client("sid") as sid:
        refused(lambda: propose(vic, doc, 0), grpc.StatusCode.PERMISSION_DENIED)
        refused(lambda: propose(sid, doc, 0), grpc.StatusCode.PERMISSION_DENIED)
        refused(sid.history, grpc.StatusCode.PERMISSION_DENIED)
        vic.history()
    with registry.client("alice") as alice, registry.client("carol") as carol:
        proposal = propose(alice, doc, 0)
        message = refused(lambda: alice.approve(proposal.id), grpc.StatusCode.PERMISSION_DENIED)
        assert "needs one of: approver" in message
        carol.approve(proposal.id)


def test_missing_or_unknown_credentials_are_unauthenticated(registry: Registry) -> None:
    """No token, or a token no principal holds: UNAUTHENTICATED."""
    with RegistryClient(registry.address) as nobody:
        refused(nobody.get_policy, grpc.StatusCode.UNAUTHENTICATED)
    with RegistryClient(registry.address, "not-a-token") as stranger:
        message = refused(stranger.history, grpc.StatusCode.UNAUTHENTICATED)
    assert "no principal" in message


def test_tightening_by_an_operator_applies_at_once(registry: Registry, sha: str) -> None:
    """Raising t_high is the emergency path: applied without an approver."""
    first_revision(registry, sha)
    tighter = registry_policy(sha, thresholds={"t_high": 0.97, "t_low": 0.6})
    with registry.client("alice") as alice:
        proposal = propose(alice, tighter, 1, "incident: too many automated errors")
        assert (proposal.state, proposal.revision, list(proposal.widening)) == (pb.APPLIED, 2, [])
        head = alice.get_policy()
    assert head.revision == 2
    assert head.approved_by == ""


def test_widening_by_an_operator_waits(registry: Registry, sha: str) -> None:
    """Lowering t_high is held for an approver, and says why."""
    first_revision(registry, sha)
    looser = registry_policy(sha, thresholds={"t_high": 0.8, "t_low": 0.5})
    with registry.client("alice") as alice:
        proposal = propose(alice, looser, 1)
        assert proposal.state == pb.PENDING
        assert list(proposal.widening) == ["models.m.thresholds.t_high: lowered from 0.9 to 0.8"]
        assert alice.get_policy().revision == 1


def test_stale_base_and_superseded_proposals(registry: Registry, sha: str) -> None:
    """A proposal on an old head is refused; a pending one overtaken is SUPERSEDED."""
    first_revision(registry, sha)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        looser = propose(alice, registry_policy(sha, thresholds={"t_high": 0.8, "t_low": 0.5}), 1)
        propose(alice, registry_policy(sha, audit_sample_rate=0.5), 1, "more audits")
        message = refused(lambda: bob.approve(looser.id), grpc.StatusCode.FAILED_PRECONDITION)
        assert "SUPERSEDED" in message
        stale = registry_policy(sha, thresholds={"t_high": 0.99, "t_low": 0.5})
        message = refused(lambda: propose(alice, stale, 1), grpc.StatusCode.FAILED_PRECONDITION)
        assert "not the head (2)" in message
        states = {p.id: p.state for p in alice.proposals()}
    assert states[looser.id] == pb.SUPERSEDED


def test_invalid_policy_names_the_field(registry: Registry, sha: str) -> None:
    """A t_high above 1 is INVALID_ARGUMENT naming policy.models.m.thresholds.t_high."""
    bad = registry_policy(sha, thresholds={"t_high": 1.5, "t_low": 0.5})
    with registry.client("alice") as alice:
        message = refused(lambda: propose(alice, bad, 0), grpc.StatusCode.INVALID_ARGUMENT)
        assert message.startswith("policy.models.m.thresholds.t_high")
        unknown = registry_policy("b" * 64)
        message = refused(lambda: propose(alice, unknown, 0), grpc.StatusCode.INVALID_ARGUMENT)
        assert "policy.models.m.calibrator.sha256" in message
        no_reason = registry_policy(sha)
        message = refused(
            lambda: propose(alice, no_reason, 0, reason=" "), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert message.startswith("reason")


def test_history_says_who_why_when_and_what(registry: Registry, sha: str) -> None:
    """History lists revisions newest first with author, approver, reason and diff."""
    first_revision(registry, sha)
    with registry.client("alice") as alice:
        propose(alice, registry_policy(sha, audit_sample_rate=0.1), 1, "audit 10 %")
        history = alice.history()
    assert [(r.revision, r.proposed_by, r.approved_by, r.reason) for r in history] == [
        (2, "alice", "", "audit 10 %"),
        (1, "alice", "bob", "first policy"),
    ]
    assert [(c.path, c.before, c.after) for c in history[0].changes] == [
        ("models.m.audit_sample_rate", "", "0.1")
    ]
    assert history[0].created_at >= history[1].created_at > 0


def test_rollback_is_a_change_like_any_other(registry: Registry, sha: str) -> None:
    """Rolling back to a looser revision needs an approver; then it is the head."""
    first_revision(registry, sha)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        propose(alice, registry_policy(sha, thresholds={"t_high": 0.95, "t_low": 0.5}), 1, "x")
        rollback = alice.rollback(1, "the tighter thresholds flood the queue")
        assert (rollback.state, rollback.rollback_of) == (pb.PENDING, 1)
        assert list(rollback.widening) == ["models.m.thresholds.t_high: lowered from 0.95 to 0.9"]
        bob.approve(rollback.id)
        head = alice.get_policy()
    assert head.revision == 3
    assert head.policy.models["m"].thresholds.t_high == pytest.approx(0.9)


def test_calibrator_round_trip_and_refusals(registry: Registry, tmp_path: Path) -> None:
    """Upload, download by sha256 byte for byte; wrong sha256 or a non-ONNX file refused."""
    path = tmp_path / "big.onnx"
    sha = upload_artefact(registry, path, temperature=1.5, version="t-v2")
    with registry.client("sid") as sid:
        info, data = sid.get_calibrator(sha)
        refused(lambda: sid.get_calibrator("c" * 64), grpc.StatusCode.NOT_FOUND)
    assert data == path.read_bytes()
    assert (info.sha256, info.version, info.uploaded_by) == (sha, "t-v2", "alice")
    with registry.client("alice") as alice:
        again = alice.put_calibrator(path.read_bytes(), "other-name", "t-v2")
        assert again.name == "big"  # idempotent: the stored artefact answers
        stub = alice._stub  # a raw stream, to send a sha256 that does not match

        def mismatched() -> Any:
            info = pb.CalibratorInfo(sha256="d" * 64, name="x", version="t-v2")
            chunks = iter([pb.CalibratorChunk(info=info, data=path.read_bytes())])
            return stub.PutCalibrator(chunks, metadata=alice._metadata)

        message = refused(mismatched, grpc.StatusCode.INVALID_ARGUMENT)
        assert message.startswith("info.sha256")
        message = refused(
            lambda: alice.put_calibrator(b"not onnx", "junk", "v"), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert message.startswith("data")
        refused(
            lambda: registry.client("vic").put_calibrator(data, "x", "t-v2"),
            grpc.StatusCode.PERMISSION_DENIED,
        )


def test_watch_pushes_new_revisions_and_refreshes(registry: Registry, sha: str) -> None:
    """A watcher gets the head, each new revision, and the head re-signed meanwhile."""
    first_revision(registry, sha)
    received: list[pb.SignedPolicy] = []
    started, done = threading.Event(), threading.Event()
    client = registry.client("sid")
    stream = client.watch(1)

    def read() -> None:
        for signed in stream:
            received.append(signed)
            started.set()
            if signed.revision == 2 and len(received) >= 3:
                done.set()
                return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert started.wait(10)
    with registry.client("alice") as alice:
        propose(alice, registry_policy(sha, audit_sample_rate=0.2), 1, "audit more")
    assert done.wait(10), [s.revision for s in received]
    client.close()
    revisions = [s.revision for s in received]
    assert revisions[0] == 1
    assert 2 in revisions
    assert received[-1].issued_at > received[0].issued_at


def test_every_attempt_is_audited(registry: Registry, sha: str) -> None:
    """Allowed and refused calls alike land in the audit trail with their outcome."""
    with registry.client("vic") as vic:
        refused(lambda: propose(vic, registry_policy(sha), 0), grpc.StatusCode.PERMISSION_DENIED)
    with RegistryClient(registry.address, "bogus") as stranger:
        refused(stranger.history, grpc.StatusCode.UNAUTHENTICATED)
    trail = registry.store.audit_trail(10)
    outcomes = [(e.principal, e.method, e.outcome) for e in trail]
    assert ("vic", "ProposeChange", "PERMISSION_DENIED") in outcomes
    assert ("", "History", "UNAUTHENTICATED") in outcomes
    assert ("alice", "PutCalibrator", "OK") in outcomes


def test_uploads_and_audit_entries_are_bounded_for_strangers(registry: Registry) -> None:
    """An unauthenticated PutCalibrator is refused before its upload is read (the
    client is asked for a few of its 256 chunks of 256 KiB, not 64 MiB), and a
    caller-filled audit detail is cut to a bounded length."""
    pulled = 0

    def chunks() -> Iterator[pb.CalibratorChunk]:
        nonlocal pulled
        info = pb.CalibratorInfo(name="n", version="v", sha256="s" * 100_000)
        for index in range(256):
            pulled += 1
            yield pb.CalibratorChunk(info=info if index == 0 else None, data=b"x" * 2**18)

    with RegistryClient(registry.address, "bogus") as stranger:
        refused(lambda: stranger._stub.PutCalibrator(chunks(), timeout=30), UNAUTHENTICATED)
    assert pulled < 256
    (entry,) = registry.store.audit_trail(1)
    assert (entry.method, entry.outcome) == ("PutCalibrator", "UNAUTHENTICATED")
    with registry.client("alice") as alice:
        refused(
            lambda: alice._stub.PutCalibrator(chunks(), metadata=alice._metadata, timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    (entry,) = registry.store.audit_trail(1)
    assert entry.outcome == "INVALID_ARGUMENT"
    assert len(entry.detail) < 600


def test_mtls_client_certificate_names_the_principal(tmp_path: Path) -> None:
    """Over mTLS a client certificate alone identifies its principal; without one the
    handshake fails, and with one no principal holds it is UNAUTHENTICATED."""
    ca = Authority(tmp_path / "ca")
    server = ca.issue("registry", server=True)
    with in_process(
        "sqlite", tmp_path, tls_cert=server.cert, tls_key=server.key, client_ca=ca.cert
    ) as registry:
        registry.store.add_principal("sid-cert", frozenset({Role.SIDECAR}), "", "sid-cert", 0.0)
        known, unknown = ca.issue("sid-cert"), ca.issue("nobody")

        def client(issued: Issued | None) -> RegistryClient:
            cert = issued.cert.read_bytes() if issued else None
            key = issued.key.read_bytes() if issued else None
            return RegistryClient(
                registry.address, ca=ca.cert.read_bytes(), cert=cert, key=key, timeout=5
            )

        with client(known) as sidecar:
            refused(sidecar.get_policy, grpc.StatusCode.NOT_FOUND)  # known, no policy yet
            refused(sidecar.history, grpc.StatusCode.PERMISSION_DENIED)
        with client(unknown) as stranger:
            message = refused(stranger.get_policy, grpc.StatusCode.UNAUTHENTICATED)
            assert "'nobody' names no principal" in message
        with client(None) as anonymous:
            refused(anonymous.get_policy, grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
def test_cli_workflow(registry: Registry, tmp_path: Path) -> None:
    """hitl policy propose (uploading the file's calibrator), approve by another person,
    show --document (a policy file again), diff, a refusal printed by status, and hitl
    calibrate publish proposing the policy that uses a new calibrator."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    write_policy(tmp_path / "policy.yaml", policy_doc(sha))

    def hitl(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        flags = ["--registry", registry.address, "--token-file", str(registry.token_file(who))]
        return subprocess.run(
            hitl_command("policy", *args, *flags), capture_output=True, text=True, check=False
        )

    proposed = hitl("alice", "propose", str(tmp_path / "policy.yaml"), "--reason", "first")
    assert proposed.returncode == 0, proposed.stderr
    assert json.loads(proposed.stdout)["state"] == "PENDING"
    denied = hitl("alice", "approve", "1")
    assert denied.returncode == 1
    assert denied.stderr.startswith("hitl: PERMISSION_DENIED: alice (roles: operator)")
    assert hitl("bob", "approve", "1", "--reason", "ok").returncode == 0
    shown = hitl("vic", "show", "--document")
    document = yaml.safe_load(shown.stdout)
    assert document["models"]["m"]["calibrator"] == {
        "name": "cal",
        "version": "t-v1",
        "sha256": sha,
    }
    document["models"]["m"]["thresholds"]["t_high"] = 0.95
    (tmp_path / "tighter.yaml").write_text(yaml.safe_dump(document))
    tightened = hitl("alice", "propose", str(tmp_path / "tighter.yaml"), "--reason", "incident")
    assert json.loads(tightened.stdout)["state"] == "APPLIED"
    assert hitl("vic", "diff", "1", "2").stdout == "models.m.thresholds.t_high: 0.9 -> 0.95\n"
    temperature_artefact(tmp_path / "refit.onnx", 1.3, "t-v2")
    published = subprocess.run(
        hitl_command(
            "calibrate", "publish", str(tmp_path / "refit.onnx"), "--model", "m",
            "--reason", "refit", "--registry", registry.address,
            "--token-file", str(registry.token_file("alice")),
        ),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    proposal = json.loads(published.stdout)
    assert (proposal["state"], proposal["baseRevision"]) == ("PENDING", "2")
    assert proposal["widening"] == ["models.m.calibrator: t-v1 -> t-v2 changes every confidence"]
    assert proposal["policy"]["models"]["m"]["calibrator"]["name"] == "refit"
