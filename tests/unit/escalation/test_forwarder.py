"""The forwarder over a real spool: order and acknowledgement, retries through a
sink outage with the circuit breaker, dead letters and their replay, and the
flush on stop. The sink here is a small scripted implementation of the Sink
interface; the real sinks are exercised against real servers in tests/integration."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from sidecar.errors import SinkUnavailable
from sidecar.escalation.deadletter import DeadLetters, entries, request_replay
from sidecar.escalation.forwarder import Forwarder, ForwarderSettings
from sidecar.escalation.sinks import Rejection, Spooled
from sidecar.escalation.spool import Spool
from sidecar.retry import Circuit, CircuitBreaker, backoff_delay
from tests.escalations import escalation

FAST = ForwarderSettings(
    batch_size=10,
    timeout_seconds=1.0,
    backoff_base_seconds=0.001,
    backoff_cap_seconds=0.01,
    breaker_failures=3,
    breaker_reset_seconds=0.05,
    idle_seconds=0.01,
)


class ScriptedSink:
    """Fails the next ``down`` deliveries, refuses ids in ``refuse``, keeps the rest."""

    name = "scripted"

    def __init__(self, down: int = 0, refuse: frozenset[str] = frozenset()) -> None:
        self.down = down
        self.refuse = refuse
        self.received: list[str] = []
        self.calls = 0

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        self.calls += 1
        if self.down:
            self.down -= 1
            raise SinkUnavailable("scripted outage")
        self.received += [e.key for e in batch if e.key not in self.refuse]
        return [Rejection(e.key, "bad item") for e in batch if e.key in self.refuse]

    async def close(self) -> None:
        return None


def rig(tmp_path: Path, sink: ScriptedSink) -> tuple[Spool, DeadLetters, Forwarder]:
    spool = Spool(tmp_path / "spool", segment_bytes=4096, budget_bytes=1 << 20)
    dead = DeadLetters(Spool(tmp_path / "dead"))
    forwarder = Forwarder(spool, sink, dead, FAST, asyncio.Event(), rng=random.Random(7))
    return spool, dead, forwarder


def spool_ids(spool: Spool, ids: list[str]) -> None:
    for escalation_id in ids:
        spool.append(orjson.dumps(escalation(escalation_id).to_dict()))


def ids(n: int) -> list[str]:
    return [f"e{i:04d}" for i in range(n)]


async def drain(forwarder: Forwarder) -> None:
    while await forwarder.forward_batch():
        pass


def test_delivers_in_order_in_batches_and_acknowledges(tmp_path: Path) -> None:
    """25 records go out in spool order in batches of 10; the spool ends empty and
    its spent segments are deleted."""
    sink = ScriptedSink()
    spool, _, forwarder = rig(tmp_path, sink)
    spool_ids(spool, ids(25))
    asyncio.run(drain(forwarder))
    assert sink.received == ids(25)
    assert sink.calls == 3
    assert spool.stats().records == 0
    assert forwarder.sent == 25
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1


def test_outage_is_retried_until_delivered_and_opens_the_circuit(tmp_path: Path) -> None:
    """Seven failed deliveries: the breaker opens after three, the batch is retried
    until the sink takes it, nothing is lost or sent twice to a healthy sink."""
    sink = ScriptedSink(down=7)
    spool, _, forwarder = rig(tmp_path, sink)
    spool_ids(spool, ids(5))
    asyncio.run(drain(forwarder))
    assert sink.received == ids(5)
    assert sink.calls == 8
    assert forwarder.retried == 7 * 5
    assert forwarder.circuit is Circuit.CLOSED
    assert spool.stats().records == 0


def test_refused_items_are_dead_lettered_and_replayed(tmp_path: Path) -> None:
    """Items the sink refuses go to the dead-letter spool with the reason; the rest
    of their batch is delivered; a replay request puts them back for delivery."""
    sink = ScriptedSink(refuse=frozenset({"e0001", "e0003"}))
    spool, dead, forwarder = rig(tmp_path, sink)
    spool_ids(spool, ids(5))
    asyncio.run(drain(forwarder))
    assert sink.received == ["e0000", "e0002", "e0004"]
    letters = entries(tmp_path / "dead")
    assert [(e["escalation"]["escalation_id"], e["sink"], e["reason"]) for e in letters] == [
        ("e0001", "scripted", "bad item"),
        ("e0003", "scripted", "bad item"),
    ]
    assert forwarder.dead_lettered == 2
    sink.refuse = frozenset()  # the sink was fixed
    request_replay(tmp_path / "dead")

    async def replay_and_drain() -> None:
        await dead.replay_if_requested(spool)
        await drain(forwarder)

    asyncio.run(replay_and_drain())
    assert sink.received[-2:] == ["e0001", "e0003"]
    assert entries(tmp_path / "dead") == []
    assert not (tmp_path / "dead" / "replay-requested").exists()


def test_stop_flushes_the_backlog_within_the_grace_period(tmp_path: Path) -> None:
    """On stop, records written before it are delivered before run returns."""
    sink = ScriptedSink(down=2)
    spool, _, forwarder = rig(tmp_path, sink)

    async def scenario() -> None:
        task = asyncio.ensure_future(forwarder.run())
        spool_ids(spool, ids(30))
        await forwarder.stop(task, grace_seconds=5.0)
        assert task.done()

    asyncio.run(scenario())
    assert sink.received == ids(30)
    assert spool.stats().records == 0


def test_stop_gives_up_at_the_grace_period_and_keeps_the_rest(tmp_path: Path) -> None:
    """A sink that never comes back: stop returns after the grace period and every
    record is still in the spool for the next start."""
    sink = ScriptedSink(down=10**9)
    spool, _, forwarder = rig(tmp_path, sink)

    async def scenario() -> None:
        task = asyncio.ensure_future(forwarder.run())
        spool_ids(spool, ids(4))
        await forwarder.stop(task, grace_seconds=0.2)

    asyncio.run(scenario())
    assert sink.received == []
    assert spool.stats().records == 4


@pytest.mark.parametrize("attempt", [0, 1, 5, 40, 10_000])
def test_backoff_is_jittered_below_its_exponential_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, 0.1, 30.0, rng) for _ in range(200)]
    ceiling = min(30.0, 0.1 * 2 ** min(attempt, 62))
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling / 2  # spread over the range, not pinned


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=10.0)
    assert [breaker.failure(0.0) for _ in range(3)] == [False, False, True]
    assert breaker.state(5.0) is Circuit.OPEN
    assert breaker.wait(5.0) == 5.0
    assert breaker.state(10.0) is Circuit.HALF_OPEN
    assert breaker.failure(10.0) is True  # the trial failed: open again
    assert breaker.state(19.0) is Circuit.OPEN
    assert breaker.success() is True
    assert breaker.state(19.0) is Circuit.CLOSED
    assert breaker.success() is False
