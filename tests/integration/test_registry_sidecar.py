"""The registry and sidecars as separate processes: approved changes reach a running
sidecar and change its decisions; a registry killed mid-stream; a sidecar restarted
while the registry is down; bad revisions refused while routing carries on."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as d
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.registry.messages import policy_from_document
from sidecar.registry.model import CalibratorInfo
from sidecar.registry.store import open_store
from tests.artefacts import confident_logits
from tests.integration.conftest import SidecarProcess, start_sidecar, wait_for
from tests.registry import (
    BACKENDS,
    Registry,
    as_process,
    registry_policy,
    start_process,
    stop_process,
    upload_artefact,
)

pytestmark = pytest.mark.integration

# confidence about 0.79 with the T=1 calibrator: HUMAN_ASSISTED under t_high 0.9,
# AUTOMATED once t_high is 0.7
UNSURE = 2.0


def unsure(request_id: str) -> pb.RouteRequest:
    return route_request(request_id, "m", confident_logits(0, UNSURE))


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with as_process(request.param, tmp_path, "--refresh-seconds", "1") as running:
        yield running


@pytest.fixture
def sha(registry: Registry, tmp_path: Path) -> str:
    """The first policy (t_high 0.9) proposed and approved, on calibrator T=1."""
    sha = upload_artefact(registry, tmp_path / "cal.onnx")
    with registry.client("alice") as alice, registry.client("bob") as bob:
        proposal = alice.propose(policy_from_document(registry_policy(sha)), "first", 0)
        bob.approve(proposal.id, "ok")
    return sha


@pytest.fixture
def sidecar_on(registry: Registry) -> Iterator[Callable[[Path], SidecarProcess]]:
    """Start a sidecar fed by the registry in a work directory (killed afterwards)."""
    started: list[SidecarProcess] = []

    def start(workdir: Path) -> SidecarProcess:
        workdir.mkdir(exist_ok=True)
        flags = ["--registry", registry.address, "--registry-public-key", str(registry.keys.public)]
        flags += ["--registry-token-file", str(registry.token_file("sid"))]
        env = {"HITL_REGISTRY_POLL_SECONDS": "0.5"}
        started.append(start_sidecar(workdir, None, *flags, env=env))
        return started[-1]

    yield start
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.process.kill()
        sidecar.process.wait()


Start = Callable[[Path], SidecarProcess]


def tier_of(sidecar: SidecarProcess, request_id: str) -> tuple[int, int]:
    """(tier, policy_revision) of an unsure prediction."""
    with sidecar.client() as client:
        response = client.route(unsure(request_id))
    return response.tier, response.policy_revision


def wait_revision(sidecar: SidecarProcess, revision: int, timeout: float = 15.0) -> None:
    counter = iter(range(1_000_000))
    wait_for(
        lambda: tier_of(sidecar, f"probe-{next(counter)}")[1] == revision,
        timeout,
        f"revision {revision} in force",
    )


def events(sidecar: SidecarProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in sidecar.log() if e.get("event") == name]


def test_approved_change_reaches_the_sidecar_and_changes_decisions(
    registry: Registry, sha: str, tmp_path: Path, sidecar_on: Start
) -> None:
    """Lowering t_high (proposed, then approved by another person) turns a HUMAN_ASSISTED
    answer AUTOMATED within seconds, with the new revision on the response."""
    sidecar = sidecar_on(tmp_path / "sidecar")
    sidecar.wait_serving()
    assert tier_of(sidecar, "before") == (d.TIER_HUMAN_ASSISTED, 1)
    looser = registry_policy(sha, thresholds={"t_high": 0.7, "t_low": 0.5})
    with registry.client("alice") as alice, registry.client("bob") as bob:
        proposal = alice.propose(policy_from_document(looser), "queue too long", 1)
        assert tier_of(sidecar, "pending") == (d.TIER_HUMAN_ASSISTED, 1)  # not yet approved
        bob.approve(proposal.id, "bound still holds")
    wait_revision(sidecar, 2)
    assert tier_of(sidecar, "after") == (d.TIER_AUTOMATED, 2)
    assert sidecar.stop() == 0


def test_registry_killed_mid_stream_and_restarted(
    registry: Registry, sha: str, tmp_path: Path, sidecar_on: Start
) -> None:
    """SIGKILL the registry: the sidecar keeps routing on revision 1; restarted on the
    same database, a change made then reaches the sidecar through a new stream."""
    sidecar = sidecar_on(tmp_path / "sidecar")
    sidecar.wait_serving()
    assert registry.process is not None
    registry.process.send_signal(signal.SIGKILL)
    registry.process.wait()
    for i in range(20):
        assert tier_of(sidecar, f"during-{i}") == (d.TIER_HUMAN_ASSISTED, 1)
    address = registry.address
    start_process(registry, "--refresh-seconds", "1", listen=address)
    tighter = registry_policy(sha, thresholds={"t_high": 0.95, "t_low": 0.85})
    with registry.client("alice") as alice:
        alice.propose(policy_from_document(tighter), "incident", 1)  # applied at once
    wait_revision(sidecar, 2, timeout=30)
    assert tier_of(sidecar, "after") == (d.TIER_HUMAN_PRIMARY, 2)
    assert events(sidecar, "policy.stream_lost")


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
def test_sidecar_restarted_while_registry_down_serves_last_known_good(
    registry: Registry, sha: str, tmp_path: Path, sidecar_on: Start
) -> None:
    """With the registry gone, a restarted sidecar serves its signed last-known-good
    copy (SERVING, same revision, same decisions); a tampered copy is refused."""
    workdir = tmp_path / "sidecar"
    sidecar = sidecar_on(workdir)
    sidecar.wait_serving()
    assert sidecar.stop() == 0
    stop_process(registry)
    restarted = sidecar_on(workdir)
    restarted.wait_serving()
    assert tier_of(restarted, "offline") == (d.TIER_HUMAN_ASSISTED, 1)
    assert restarted.stop() == 0
    stored = workdir / "state" / "policy" / "signed-policy.pb"
    tampered = stored.read_bytes().replace(b'"t_high":0.9', b'"t_high":0.1')
    assert tampered != stored.read_bytes()
    stored.write_bytes(tampered)
    refusing = sidecar_on(workdir)
    with refusing.client() as client:
        assert not client.serving()
    assert events(refusing, "policy.last_known_good_rejected")


def test_corrupt_calibrator_and_sha256_mismatch_are_refused(
    registry: Registry, sha: str, tmp_path: Path, sidecar_on: Start
) -> None:
    """A revision whose calibrator is not ONNX, then one whose stored bytes do not hash
    to the sha256 it names, are both rejected; routing stays on revision 1."""
    sidecar = sidecar_on(tmp_path / "sidecar")
    sidecar.wait_serving()
    garbage = b"this is not an onnx graph" * 10
    garbage_sha = hashlib.sha256(garbage).hexdigest()
    store = open_store(registry.db)
    try:  # behind the registry's back: its upload would have refused this file
        store.put_calibrator(
            CalibratorInfo(garbage_sha, "bad", "t-v1", len(garbage), "x", 0.0), garbage
        )
    finally:
        store.close()
    other = upload_artefact(registry, tmp_path / "t2.onnx", temperature=2.0, version="t-v2")
    _corrupt_stored_bytes(registry.db, other)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        broken = alice.propose(policy_from_document(registry_policy(garbage_sha)), "bad", 1)
        bob.approve(broken.id)
    wait_for(lambda: events(sidecar, "policy.rejected"), 15, "the broken calibrator rejected")
    assert tier_of(sidecar, "still-1") == (d.TIER_HUMAN_ASSISTED, 1)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        swapped = alice.propose(policy_from_document(registry_policy(other, "t-v2")), "t2", 2)
        bob.approve(swapped.id)
    wait_for(
        lambda: any(e.get("revision") == 3 for e in events(sidecar, "policy.rejected")),
        15,
        "the mismatched calibrator rejected",
    )
    reasons = [(e.get("revision"), e.get("reason")) for e in events(sidecar, "policy.rejected")]
    assert (2, "calibrator") in reasons
    assert (3, "sha256") in reasons
    assert tier_of(sidecar, "still-1-again") == (d.TIER_HUMAN_ASSISTED, 1)


def test_another_registry_key_is_refused(
    registry: Registry, sha: str, tmp_path: Path, sidecar_on: Start
) -> None:
    """A registry signing with a key the sidecar does not trust changes nothing: the
    revision is rejected for its signature and routing stays on the old one."""
    sidecar = sidecar_on(tmp_path / "sidecar")
    sidecar.wait_serving()
    stop_process(registry)
    from sidecar.policy.signing import generate_key_pair

    generate_key_pair(registry.keys.private, tmp_path / "unused.pub")
    start_process(registry, "--refresh-seconds", "1", listen=registry.address)
    with registry.client("alice") as alice:
        alice.propose(
            policy_from_document(registry_policy(sha, audit_sample_rate=0.5)), "more audits", 1
        )
    wait_for(
        lambda: any(e.get("reason") == "signature" for e in events(sidecar, "policy.rejected")),
        20,
        "a revision rejected for its signature",
    )
    assert tier_of(sidecar, "kept") == (d.TIER_HUMAN_ASSISTED, 1)


def _corrupt_stored_bytes(db: str, sha256: str) -> None:
    """Overwrite a stored artefact's bytes (as a failing disk or a bad restore might)."""
    statement = "UPDATE registry_calibrators SET content = {p} WHERE sha256 = {q}"
    if db.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(db.removeprefix("sqlite:")) as connection:
            connection.execute(statement.format(p="?", q="?"), (b"\x00" * 100, sha256))
    else:
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute(statement.format(p="%s", q="%s"), (b"\x00" * 100, sha256))
