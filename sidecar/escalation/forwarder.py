"""The forwarder: off the request path, it reads the spool in order, delivers batches
to the sink, and acknowledges the spool once the sink has them.

- At least once: the spool is acknowledged only after the sink answered, so a crash
  between the two resends the batch; sinks dedupe by escalation_id.
- A failed delivery is retried, with exponential backoff and full jitter, for ever:
  a sink down for hours costs disk (up to the spool's budget), not data. After
  ``breaker_failures`` consecutive failures the circuit opens and the forwarder
  waits ``breaker_reset_seconds`` before a trial delivery.
- Items the sink refuses for good go to the dead-letter spool with the reason, and
  can be inspected and replayed (``hitl escalations``).
- With fsync on, only records an fsync has covered are forwarded, so the sink never
  holds an escalation the spool could lose.
- ``stop`` flushes what it can within the grace period, then gives up, logging
  ``forwarder.stopped_with_backlog``; what is left stays in the spool for the next
  process on the same state directory, which counts it in
  ``hitl.spool.recovered_records`` and delivers it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import structlog

from sidecar.errors import SinkUnavailable
from sidecar.escalation.deadletter import DeadLetters
from sidecar.escalation.record import REQUIRED
from sidecar.escalation.sinks import YIELD_EVERY, Rejection, Sink, Spooled
from sidecar.escalation.spool import Spool
from sidecar.retry import Circuit, CircuitBreaker, backoff_delay

log = structlog.get_logger("hitl.forwarder")


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    batch_size: int = 256
    timeout_seconds: float = 5.0
    backoff_base_seconds: float = 0.1
    backoff_cap_seconds: float = 30.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 10.0
    idle_seconds: float = 0.5  # longest wait for new records without a wake-up
    # After a wake-up, let a batch gather before reading. Each batch costs the event
    # loop Route shares a fixed amount (a sink call, an ack written), so fewer,
    # fuller batches disturb Route less; a reviewer does not notice 0.2 s.
    linger_seconds: float = 0.2


@dataclass(frozen=True, slots=True)
class Stream:
    """What a spool holds: records with the ``required`` fields, each known by its
    ``key`` field (what sinks dedupe by and dead letters are named by)."""

    what: str  # for messages: "an escalation"
    key: str
    required: frozenset[str]
    # Sync the spool before each read: for a stream no caller waits on, whose records
    # would otherwise wait for someone else's fsync to be forwarded.
    sync: bool = False


ESCALATIONS = Stream("an escalation", "escalation_id", REQUIRED)


@dataclass(frozen=True, slots=True)
class _Batch:
    end: int  # spool offset past the last record
    escalations: list[Spooled]
    undecodable: list[bytes]


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        sink: Sink,
        dead: DeadLetters,
        settings: ForwarderSettings,
        written: asyncio.Event,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        stream: Stream = ESCALATIONS,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.dead = dead
        self.settings = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds)
        self.sent = 0
        self.retried = 0
        self.dead_lettered = 0
        self._written = written
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._position = spool.acked_offset
        self._stream = stream
        self._stopping = False

    async def run(self) -> None:
        """Forward until stopped; once stopping, until the spool is empty."""
        while True:
            self._written.clear()
            if await self.forward_batch() == self.settings.batch_size:
                continue  # a backlog: no waiting between full batches
            if self._stopping and not self.spool.stats().records:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.idle_seconds):
                    await self._written.wait()
            await self.dead.replay_if_requested(self.spool)
            if not self._stopping:
                await asyncio.sleep(self.settings.linger_seconds)

    async def stop(self, task: asyncio.Task[None], grace_seconds: float) -> None:
        """Let ``task`` (running ``run``) flush for up to grace_seconds, then cancel it."""
        self._stopping = True
        self._written.set()
        try:
            async with asyncio.timeout(grace_seconds):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stats = self.spool.stats()
            log.warning(
                "forwarder.stopped_with_backlog",
                records=stats.records,
                bytes=stats.pending_bytes,
                spool=str(self.spool.directory),
                sink=self.sink.name,
            )
        await self.sink.close()

    async def forward_batch(self) -> int:
        """Deliver the next batch, retrying until it is delivered; return how many
        records it held (0: nothing to forward)."""
        batch = await self._read()
        if batch is None:
            return 0
        if batch.escalations:
            rejected = await self._deliver(batch.escalations)
            by_key = {item.key: item for item in batch.escalations}
            for rejection in rejected:
                item = by_key.get(rejection.key)
                if item is not None:
                    await self.dead.add(item.record, self.sink.name, rejection.reason)
            self.sent += len(batch.escalations) - len(rejected)
            self.dead_lettered += len(rejected)
        for payload in batch.undecodable:
            await self.dead.add_raw(payload, self.sink.name, f"record is not {self._stream.what}")
            self.dead_lettered += 1
        count = len(batch.escalations) + len(batch.undecodable)
        await asyncio.to_thread(self.spool.ack, batch.end, count)
        self._position = batch.end
        return count

    async def _read(self) -> _Batch | None:
        """The next batch, read and decoded on the event loop a few records at a time.
        Not in a worker thread: decoding is Python, and a thread running Python holds
        the interpreter lock for up to its switch interval (5 ms) against the loop's
        Route calls; here a Route waits at most for YIELD_EVERY records. The reads
        themselves are of recently written, cached pages."""
        escalations: list[Spooled] = []
        undecodable: list[bytes] = []
        end = 0
        if self._stream.sync and self.spool.fsync:
            await asyncio.to_thread(self.spool.sync)
        records = self.spool.read(
            self._position, self.settings.batch_size, until=self.spool.synced_offset
        )
        for count, (offset, payload) in enumerate(records, 1):
            end = offset
            try:
                record = orjson.loads(payload)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and record.keys() >= self._stream.required:
                escalations.append(Spooled(payload, record, str(record[self._stream.key])))
            else:
                undecodable.append(payload)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if not end:
            return None
        return _Batch(end, escalations, undecodable)

    async def _deliver(self, batch: list[Spooled]) -> list[Rejection]:
        attempt = 0
        while True:
            wait = self.breaker.wait(self._monotonic())
            if wait:
                await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(self.settings.timeout_seconds):
                    rejected = await self.sink.deliver(batch)
            except (SinkUnavailable, TimeoutError) as exc:
                self.retried += len(batch)
                delay = backoff_delay(
                    attempt,
                    self.settings.backoff_base_seconds,
                    self.settings.backoff_cap_seconds,
                    self._rng,
                )
                if self.breaker.failure(self._monotonic()):
                    log.warning(
                        "forwarder.circuit_open",
                        sink=self.sink.name,
                        reset_seconds=self.settings.breaker_reset_seconds,
                        error=str(exc) or type(exc).__name__,
                    )
                log.info(
                    "forwarder.retry",
                    sink=self.sink.name,
                    attempt=attempt + 1,
                    records=len(batch),
                    delay_seconds=round(delay, 3),
                    error=str(exc) or type(exc).__name__,
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if self.breaker.success():
                log.info("forwarder.circuit_closed", sink=self.sink.name, attempts=attempt + 1)
            return rejected

    @property
    def circuit(self) -> Circuit:
        return self.breaker.state(self._monotonic())
