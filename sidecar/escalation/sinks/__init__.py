"""Where the forwarder delivers escalations: one interface, one module per sink.

A sink either takes a whole batch (returning the items it refuses for good, which
the forwarder dead-letters) or raises SinkUnavailable, and the forwarder sends the
batch again later. Delivery is at least once: every sink must dedupe by
``escalation_id`` (the review queue's Submit does; JetStream does by message id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sidecar.errors import ConfigError
from sidecar.escalation.record import Escalation

# Escalations decoded or encoded between two yields to the event loop that Route
# shares: about 50 us of Python on a quiet core, 150 us under load, which is how
# long a Route may wait behind them.
YIELD_EVERY = 4


@dataclass(frozen=True, slots=True)
class Rejection:
    escalation_id: str
    reason: str


class Sink(Protocol):
    name: str

    async def deliver(self, batch: Sequence[Escalation]) -> list[Rejection]: ...

    async def close(self) -> None: ...


SINK_SCHEMES = ("review", "nats")


def open_sink(url: str, deployment: str, timeout: float) -> Sink:
    """A sink from its URL: ``review://HOST:PORT`` (the review queue's gRPC endpoint)
    or ``nats://HOST:PORT[,nats://...]`` (JetStream)."""
    scheme, sep, rest = url.partition("://")
    if scheme == "review" and sep and rest:
        from sidecar.escalation.sinks.review import ReviewQueueSink

        return ReviewQueueSink(rest, timeout)
    if scheme == "nats" and sep and rest:
        from sidecar.escalation.sinks.nats import NatsSink

        return NatsSink(url.split(","), deployment, timeout)
    raise ConfigError(f"HITL_SINK must be review://HOST:PORT or nats://HOST:PORT, got {url!r}")
