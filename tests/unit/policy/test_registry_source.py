"""The registry policy source over real gRPC connections on loopback: the stand-in
registry of tests/fake_registry.py for every way a registry can misbehave, the real
registry server (in-process) for the contract itself, and the sidecar wired from its
config for health and routing.

Each test runs its scenario with asyncio.run: the stand-in registry and the source
share that loop; the real registry runs on its own loop thread."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from structlog.testing import capture_logs

from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc
from sidecar.app import build
from sidecar.clock import SystemClock
from sidecar.config import SidecarConfig
from sidecar.core.decision import Reason
from sidecar.core.request import RouteInput
from sidecar.core.thresholds import Tier
from sidecar.escalation.recorder import MemoryRecorder
from sidecar.policy.last_known_good import LastKnownGood
from sidecar.policy.registry_source import (
    RegistryConnection,
    RegistryPolicySource,
    WatchSettings,
)
from sidecar.policy.signing import Signer, load_verifier
from sidecar.policy.snapshot import SnapshotHolder
from sidecar.registry.messages import policy_from_document
from sidecar.router import Router, TraceIds
from sidecar.telemetry.audit import InMemoryAudit
from tests.artefacts import confident_logits, temperature_artefact
from tests.certs import Authority
from tests.fake_registry import FakeRegistry, new_signer, registry_doc, serving

FAST = WatchSettings(
    poll_seconds=0.2,
    backoff_base_seconds=0.01,
    backoff_cap_seconds=0.05,
    idle_seconds=5.0,
    call_timeout_seconds=2.0,
    download_timeout_seconds=5.0,
)
SIDECAR_TOKEN = "sidecar-token"  # noqa: S105 (test tokens, no secrets)
OLD_TOKEN, RIGHT_TOKEN = "an-old-token", "the-right-token"
TRACE = TraceIds("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    """The registry's key pair, under tmp_path/keys."""
    return new_signer(tmp_path / "keys")


@pytest.fixture
def fake(signer: Signer) -> FakeRegistry:
    return FakeRegistry(signer)


class Artefacts:
    """Temperature-scaling artefacts written under a directory, by version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def make(self, version: str, temperature: float = 1.0) -> tuple[str, bytes]:
        path = self.directory / f"{version}.onnx"
        sha = temperature_artefact(path, temperature, version)
        return sha, path.read_bytes()


@pytest.fixture
def artefacts(tmp_path: Path) -> Artefacts:
    (tmp_path / "artefacts").mkdir()
    return Artefacts(tmp_path / "artefacts")


async def publish(
    fake: FakeRegistry,
    artefacts: Artefacts,
    version: str,
    temperature: float = 1.0,
    max_age: float = 0.0,
    tamper: bool = False,
) -> str:
    """Store a calibrator of version in fake and publish a policy naming it."""
    sha, data = artefacts.make(version, temperature)
    fake.blobs[sha] = data
    doc = registry_doc(sha, version)
    if max_age:
        doc["max_age_seconds"] = max_age
    await fake.publish(doc, tamper=tamper)
    return sha


class Rig:
    """A source against address, with the last-known-good copy under workdir/state."""

    def __init__(self, workdir: Path, address: str, token: str = "", **tls: bytes) -> None:
        verifier = load_verifier(workdir / "keys" / "public.pem")
        self.holder = SnapshotHolder()
        self.store = LastKnownGood(workdir / "state" / "policy", verifier)
        self.source = RegistryPolicySource(
            RegistryConnection(address, token, **tls),
            self.holder,
            self.store,
            verifier,
            FAST,
            rng=random.Random(7),
        )

    @property
    def revision(self) -> int:
        return self.source.revision

    async def wait_revision(self, revision: int) -> None:
        await wait_until(lambda: self.revision == revision, f"revision {revision}")


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Rig]:
    task = asyncio.create_task(rig.source.run())
    try:
        yield rig
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled(), "the source's run() ended on its own"


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def events(logs: list[Any], name: str) -> list[Any]:
    return [entry for entry in logs if entry["event"] == name]


def decide(holder: SnapshotHolder, request_id: str) -> Any:
    """Route one confident prediction (class 2) with the holder's snapshot."""
    router = Router(holder, MemoryRecorder(), InMemoryAudit(), None, SystemClock(), 100, 60.0)
    request = RouteInput(request_id, "m", np.array(confident_logits(2), dtype=np.float32))
    return router.decide(request, TRACE).decision


def test_first_policy_is_served_by_the_wired_sidecar(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A sidecar configured with HITL_REGISTRY is NOT_SERVING until the first policy
    arrives, then SERVING and routing on it; its metrics carry revision and age."""
    (tmp_path / "token").write_text(SIDECAR_TOKEN + "\n")
    fake.token = SIDECAR_TOKEN

    async def scenario() -> None:
        async with serving(fake) as address:
            config = SidecarConfig.load(
                {
                    "registry": address,
                    "registry_public_key": str(tmp_path / "keys" / "public.pem"),
                    "registry_token_file": str(tmp_path / "token"),
                    "registry_poll_seconds": "0.2",
                    "listen": "127.0.0.1:0",
                    "state_dir": str(tmp_path / "state"),
                },
                env={},
            )
            reader = InMemoryMetricReader()
            sidecar = build(config, metric_readers=[reader])
            await sidecar.start()
            try:
                async with grpc.aio.insecure_channel(sidecar.address) as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    check = health_pb2.HealthCheckRequest(service="")
                    assert (
                        await health.Check(check)
                    ).status == health_pb2.HealthCheckResponse.NOT_SERVING
                    await publish(fake, artefacts, "t-v1")
                    deadline = time.monotonic() + 10
                    while (
                        await health.Check(check)
                    ).status != health_pb2.HealthCheckResponse.SERVING:
                        assert time.monotonic() < deadline, "never SERVING"
                        await asyncio.sleep(0.02)
                    router = pb_grpc.RouterStub(channel)
                    answer = await router.Route(route_request("r1", "m", confident_logits(2)))
                    assert (answer.tier, answer.policy_revision) == (dpb.TIER_AUTOMATED, 1)
                    assert not answer.degraded
                metrics = _metrics(reader)
                assert metrics["hitl.policy.revision"] == 1
                assert 0 <= metrics["hitl.policy.age"] < 10
            finally:
                await sidecar.stop()
        assert (tmp_path / "state" / "policy" / "signed-policy.pb").exists()

    asyncio.run(scenario())


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points: list[Any] = [p for p in metric.data.data_points if hasattr(p, "value")]
                if len(points) == 1 and not points[0].attributes:
                    found[metric.name] = points[0].value
                else:
                    found[metric.name] = {
                        tuple(sorted(p.attributes.items())): p.value for p in points
                    }
    return found


def test_new_revision_downloads_verifies_and_swaps(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A new revision naming a new calibrator: downloaded once, verified, swapped in,
    persisted; the calibrator no longer named is deleted from disk."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            first = await publish(fake, artefacts, "t-v1")
            await rig.wait_revision(1)
            with capture_logs() as logs:
                second = await publish(fake, artefacts, "t-v2", temperature=2.0)
                await rig.wait_revision(2)
            snapshot = rig.holder.current
            assert snapshot is not None
            assert snapshot.calibrators["m"].metadata.version == "t-v2"
            assert snapshot.source == f"registry:{address}"
            assert fake.downloads == [first, second]
            assert rig.store.has_artefact(second)
            # Pruned just after the swap.
            await wait_until(lambda: not rig.store.has_artefact(first), "the old artefact gone")
            stored = rig.store.load()
            assert stored is not None
            assert stored.policy.revision == 2
            (loaded,) = events(logs, "policy.loaded")
            assert (loaded["revision"], loaded["source"], loaded["via"]) == (2, "registry", "watch")

    asyncio.run(scenario())


async def _rejected_keeps_revision_one(
    rig: Rig, fake: FakeRegistry, reason: str, publish_bad: Callable[[], Any]
) -> list[Any]:
    await rig.wait_revision(1)
    with capture_logs() as logs:
        await publish_bad()
        await wait_until(lambda: rig.source.stats.rejected[reason] == 1, f"a {reason} rejection")
    assert rig.revision == 1
    assert decide(rig.holder, "after-rejection").tier is Tier.AUTOMATED
    (rejected,) = events(logs, "policy.rejected")
    assert (rejected["reason"], rejected["revision"], rejected["revision_in_force"]) == (
        reason,
        2,
        1,
    )
    return logs


def test_tampered_policy_is_rejected_and_the_stream_goes_on(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A document altered after signing is rejected and counted; the policy in force
    stays, and the next good revision on the same stream is applied."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await _rejected_keeps_revision_one(
                rig, fake, "signature", lambda: publish(fake, artefacts, "t-v1", tamper=True)
            )
            await publish(fake, artefacts, "t-v1")
            await rig.wait_revision(3)
            assert fake.watches == [0]

    asyncio.run(scenario())


def test_sha256_mismatch_is_rejected_and_nothing_kept(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """Bytes that do not hash to the policy's sha256 reject the revision; no file
    (temporary or not) is left for it."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            sha, _ = artefacts.make("t-v2", 2.0)
            fake.blobs[sha] = (artefacts.directory / "t-v1.onnx").read_bytes()
            await _rejected_keeps_revision_one(
                rig, fake, "sha256", lambda: fake.publish(registry_doc(sha, "t-v2"))
            )
            assert not rig.store.has_artefact(sha)
            assert not [p for p in rig.store.directory.rglob("*") if p.name.endswith(".tmp")]

    asyncio.run(scenario())


def test_corrupt_artefact_is_rejected(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """An artefact whose sha256 matches the policy but is not an ONNX graph rejects
    the revision (it fails to load while the snapshot is built, before any swap)."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            junk = b"these bytes are not an ONNX graph"
            sha = hashlib.sha256(junk).hexdigest()
            fake.blobs[sha] = junk
            logs = await _rejected_keeps_revision_one(
                rig, fake, "calibrator", lambda: fake.publish(registry_doc(sha, "t-v2"))
            )
            assert "not a loadable ONNX graph" in events(logs, "policy.rejected")[0]["error"]
            stored = rig.store.load()
            assert stored is not None
            assert stored.policy.revision == 1

    asyncio.run(scenario())


def test_unknown_calibrator_is_rejected(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A revision naming a calibrator the registry does not hold (NOT_FOUND) is rejected."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await _rejected_keeps_revision_one(
                rig, fake, "calibrator", lambda: fake.publish(registry_doc("b" * 64))
            )

    asyncio.run(scenario())


def test_unreachable_registry_at_start_serves_last_known_good(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """Restarted while the registry is down, the source serves the copy on disk and keeps
    trying; when the registry returns it resumes from the revision it holds."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await rig.wait_revision(1)
        port = int(address.rpartition(":")[2])
        with capture_logs() as logs:
            async with running(Rig(tmp_path, address)) as rig:
                await rig.wait_revision(1)
                snapshot = rig.holder.current
                assert snapshot is not None
                assert snapshot.source.startswith("last-known-good:")
                assert decide(rig.holder, "offline").tier is Tier.AUTOMATED
                await wait_until(lambda: rig.source.stats.reconnects >= 3, "reconnect attempts")
                fake.watches.clear()
                await publish(fake, artefacts, "t-v2", temperature=2.0)
                async with serving(fake, port):
                    await rig.wait_revision(2)
                    # A poll may bring revision 2 before the Watch is reopened.
                    await wait_until(lambda: bool(fake.watches), "the Watch reopened")
                # From the revision held: 1, or 2 when a poll got there first.
                assert min(fake.watches) >= 1
        (restored, _) = events(logs, "policy.loaded")
        assert (restored["source"], restored["revision"]) == ("last_known_good", 1)
        assert events(logs, "policy.stream_lost")

    asyncio.run(scenario())


def test_dropped_stream_reconnects_from_held_revision(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A stream cut by the registry is reopened from the revision in force, counted as
    a reconnect, and delivers the next revision."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await rig.wait_revision(1)
            await fake.drop_streams()
            await wait_until(lambda: len(fake.watches) == 2, "a second Watch")
            assert fake.watches == [0, 1]
            assert rig.source.stats.reconnects == 1
            await publish(fake, artefacts, "t-v2", temperature=2.0)
            await rig.wait_revision(2)
            assert fake.downloads.count(fake.downloads[0]) == 1

    asyncio.run(scenario())


def test_same_revision_with_fresher_issued_at_refreshes_age_only(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """The head re-signed later refreshes the snapshot's issued_at, on disk too, with the
    same calibrator sessions and no download."""
    fake.refresh_seconds = 0.1
    fake.issued_at_offset = -100.0

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await rig.wait_revision(1)
            first = rig.holder.current
            assert first is not None
            assert first.policy.issued_at is not None
            assert time.time() - first.policy.issued_at > 90
            fake.issued_at_offset = 0.0

            def fresh() -> bool:
                current = rig.holder.current
                issued = current.policy.issued_at if current else None
                return issued is not None and time.time() - issued < 10

            with capture_logs() as logs:
                await wait_until(fresh, "a fresher issued_at")
            assert events(logs, "policy.refreshed")
            assert not events(logs, "policy.loaded")
            current = rig.holder.current
            assert current is not None
            assert current.calibrators["m"] is first.calibrators["m"]
            assert current.policy.models == first.policy.models
            assert len(fake.downloads) == 1
            stored = rig.store.load()
            assert stored is not None
            assert stored.policy.issued_at is not None
            assert time.time() - stored.policy.issued_at < 10

    asyncio.run(scenario())


def test_policy_past_max_age_falls_back_until_refreshed(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A policy issued longer ago than its max_age_seconds is served but every decision
    falls back (HUMAN_ASSISTED, degraded); a re-signed copy restores automation."""
    fake.refresh_seconds = 0.2
    fake.issued_at_offset = -120.0

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            with capture_logs() as logs:
                await publish(fake, artefacts, "t-v1", max_age=60)
                await rig.wait_revision(1)
            assert events(logs, "policy.stale")
            stale = decide(rig.holder, "stale")
            assert (stale.tier, stale.reason, stale.degraded) == (
                Tier.HUMAN_ASSISTED,
                Reason.FALLBACK_STALE_POLICY,
                True,
            )
            fake.issued_at_offset = 0.0

            def automated() -> bool:
                return decide(rig.holder, f"fresh-{time.monotonic()}").tier is Tier.AUTOMATED

            await wait_until(automated, "automation after the refresh")

    asyncio.run(scenario())


def test_broken_streams_fall_back_to_polling(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """When every Watch fails, GetPolicy polled every poll interval still delivers."""
    fake.break_streams = True

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            with capture_logs() as logs:
                await publish(fake, artefacts, "t-v1")
                await rig.wait_revision(1)
                await publish(fake, artefacts, "t-v2", temperature=2.0)
                await rig.wait_revision(2)
            assert fake.polls >= 2
            assert {e["via"] for e in events(logs, "policy.loaded")} == {"poll"}
            assert rig.source.stats.reconnects >= 2

    asyncio.run(scenario())


def test_silent_stream_is_polled_around_and_reopened(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A stream held open without a message (a buffering proxy): polling delivers the
    policy, and the stream is reopened once it has been idle for idle_seconds."""
    fake.silent_streams = True

    async def scenario() -> None:
        async with serving(fake) as address:
            rig = Rig(tmp_path, address)
            rig.source = RegistryPolicySource(
                rig.source.connection,
                rig.holder,
                rig.store,
                load_verifier(tmp_path / "keys" / "public.pem"),
                dataclasses.replace(FAST, idle_seconds=0.3),
            )
            async with running(rig):
                await publish(fake, artefacts, "t-v1")
                await rig.wait_revision(1)
                await wait_until(lambda: len(fake.watches) >= 2, "the silent stream reopened")
                assert rig.source.stats.reconnects >= 1

    asyncio.run(scenario())


def test_refused_credentials_are_logged_and_retried(
    tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """UNAUTHENTICATED is logged as policy.registry_refused and retried; once the
    registry accepts the token, the policy arrives without a restart."""
    fake.token = RIGHT_TOKEN

    async def scenario() -> None:
        async with serving(fake) as address:
            await publish(fake, artefacts, "t-v1")
            with capture_logs() as logs:
                async with running(Rig(tmp_path, address, OLD_TOKEN)) as rig:
                    await wait_until(
                        lambda: len(events(logs, "policy.registry_refused")) >= 2, "refusals"
                    )
                    assert rig.revision == 0
                    fake.token = OLD_TOKEN
                    await rig.wait_revision(1)
            refused = events(logs, "policy.registry_refused")[0]
            assert "UNAUTHENTICATED" in refused["error"]

    asyncio.run(scenario())


def test_older_revision_is_ignored(
    tmp_path: Path, signer: Signer, fake: FakeRegistry, artefacts: Artefacts
) -> None:
    """A registry answering with an older revision than the one in force (say, restored
    from an old backup) changes nothing: rejected as stale_revision."""

    async def scenario() -> None:
        async with serving(fake) as address, running(Rig(tmp_path, address)) as rig:
            await publish(fake, artefacts, "t-v1")
            await publish(fake, artefacts, "t-v2", temperature=2.0)
            await rig.wait_revision(2)
        older = FakeRegistry(signer)
        older.break_streams = True  # polled: GetPolicy answers its head whatever we hold
        older.revisions = fake.revisions[:1]
        older.blobs = fake.blobs
        async with serving(older) as address, running(Rig(tmp_path, address)) as rig:
            await wait_until(
                lambda: rig.source.stats.rejected["stale_revision"] >= 1, "a stale rejection"
            )
            assert rig.revision == 2

    asyncio.run(scenario())


def test_mutual_tls(tmp_path: Path, fake: FakeRegistry, artefacts: Artefacts) -> None:
    """Over TLS with a client certificate (the registry requires one), policies flow."""
    ca = Authority(tmp_path / "ca")
    server, client = ca.issue("registry", server=True), ca.issue("sidecar")
    credentials = grpc.ssl_server_credentials(
        [(server.key.read_bytes(), server.cert.read_bytes())],
        root_certificates=ca.ca_pem,
        require_client_auth=True,
    )

    async def scenario() -> None:
        await publish(fake, artefacts, "t-v1")
        async with serving(fake, credentials=credentials) as address:
            rig = Rig(
                tmp_path,
                address,
                root_certificates=ca.ca_pem,
                private_key=client.key.read_bytes(),
                certificate_chain=client.cert.read_bytes(),
            )
            async with running(rig):
                await rig.wait_revision(1)

    asyncio.run(scenario())


def test_real_registry_delivers_approved_policies(tmp_path: Path) -> None:
    """Against the registry server itself, with the sidecar role's token: the approved
    first policy arrives, then an operator's tightening change applied at once."""
    from tests.registry import in_process, registry_policy, upload_artefact

    with in_process("sqlite", tmp_path / "registry") as registry:
        sha = upload_artefact(registry, tmp_path / "cal.onnx")
        with registry.client("alice") as alice, registry.client("bob") as bob:
            proposal = alice.propose(policy_from_document(registry_policy(sha)), "first", 0)
            bob.approve(proposal.id, "checked")
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "public.pem").write_bytes(registry.keys.public.read_bytes())

        async def scenario() -> None:
            rig = Rig(tmp_path, registry.address, registry.tokens["sid"])
            async with running(rig):
                await rig.wait_revision(1)
                tighter = registry_policy(sha, thresholds={"t_high": 0.95, "t_low": 0.5})

                def propose() -> None:
                    with registry.client("alice") as client:
                        client.propose(policy_from_document(tighter), "tighten", 1)

                await asyncio.to_thread(propose)
                await rig.wait_revision(2)
                current = rig.holder.current
                assert current is not None
                assert current.policy.models["m"].thresholds.default.t_high == 0.95

        asyncio.run(scenario())
