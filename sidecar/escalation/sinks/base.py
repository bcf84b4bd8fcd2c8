"""The interface every sink implements, and the sink URL's form.

A sink either takes a whole batch (returning the items it refuses for good, which
the forwarder dead-letters) or raises SinkUnavailable, and the forwarder sends the
batch again later. Delivery is at least once: every sink must dedupe by the
record's key (an escalation's ``escalation_id``: the review queue's Submit does,
JetStream does by message id; the feedback service by request and feedback id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Escalations decoded or encoded between two yields to the event loop that Route
# shares: a Route may wait behind that many (measured: see
# docs/performance.md#the-forwarder-on-the-event-loop).
YIELD_EVERY = 4


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str  # the refused record's Spooled.key
    reason: str


@dataclass(frozen=True, slots=True)
class Spooled:
    """A record as the forwarder read it from the spool: the JSON written (for an
    escalation, Escalation.to_dict's fields), that JSON decoded, and its key (an
    escalation's escalation_id). Sinks build their wire form from these rather than
    from an Escalation, which would be one more copy per record (measured: see
    docs/performance.md#the-forwarder-on-the-event-loop)."""

    payload: bytes
    record: dict[str, Any]
    key: str


class Sink(Protocol):
    name: str

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]: ...

    async def close(self) -> None: ...


NATS_SCHEMES = frozenset({"nats", "tls"})  # tls://: the client insists on TLS


def sink_addresses(url: str) -> tuple[str, list[str]]:
    """A sink URL's kind (``review`` or ``nats``) and its HOST:PORT addresses:
    ``review://HOST:PORT`` (the review queue's gRPC endpoint), or one or more
    ``nats://HOST:PORT`` or ``tls://HOST:PORT`` joined by commas (a JetStream
    cluster). ValueError for anything else; the addresses themselves are the
    caller's to check."""
    urls = url.split(",")
    parts = [u.partition("://") for u in urls]
    schemes = {scheme for scheme, _, _ in parts}
    if not all(sep and rest for _, sep, rest in parts) or not (
        schemes <= NATS_SCHEMES or (schemes == {"review"} and len(urls) == 1)
    ):
        raise ValueError(
            "must be review://HOST:PORT or nats://HOST:PORT[,nats://HOST:PORT...]"
            f" (tls:// for TLS), got {url!r}"
        )
    return ("nats" if schemes <= NATS_SCHEMES else "review"), [rest for _, _, rest in parts]
