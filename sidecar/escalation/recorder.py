"""Where Route puts an escalation before it answers.

``record`` hands the escalation to the recorder without waiting for a disk and
returns a ticket; ``durable`` returns once that ticket is as durable as the setting
promises, or raises EscalationRefused (Route then answers UNAVAILABLE: the caller
must not act on a review nobody will see). The two halves let the Router write
without an await, which keeps replay and escalation atomic on the event loop, and
let the servicer wait for the disk without blocking the loop."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from typing import Protocol

import orjson
import structlog

from sidecar.errors import EscalationRefused
from sidecar.escalation.record import Escalation
from sidecar.escalation.spool import Spool

log = structlog.get_logger("hitl.escalation")


class Recorder(Protocol):
    def record(self, escalation: Escalation) -> int: ...

    def record_many(self, escalations: Sequence[Escalation]) -> list[int | EscalationRefused]:
        """Each escalation's ticket, or why it was refused; together where they can be."""
        ...

    async def durable(self, ticket: int) -> None: ...

    def close(self) -> None: ...


class MemoryRecorder:
    """Keeps escalations in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.escalations: list[Escalation] = []

    def record(self, escalation: Escalation) -> int:
        self.escalations.append(escalation)
        return len(self.escalations)

    def record_many(self, escalations: Sequence[Escalation]) -> list[int | EscalationRefused]:
        return [self._one(escalation) for escalation in escalations]

    def _one(self, escalation: Escalation) -> int | EscalationRefused:
        try:
            return self.record(escalation)
        except EscalationRefused as exc:
            return exc

    async def durable(self, ticket: int) -> None:
        return None

    def close(self) -> None:
        return None


class SpoolRecorder:
    """Escalations into the local spool. With fsync on, ``durable`` waits for an
    fsync that covers the ticket: one runs at a time, in the recorder's own thread,
    and covers every record written before it started, so concurrent Route calls
    share it (group commit).

    Each waiter has its own future, resolved by the one callback the thread
    schedules when its fsync returns: one pass of the event loop from the disk to
    the waiting Route (an executor's future costs a second one, and more through a
    shield). A cancelled waiter (its caller went away) is skipped; it never cancels
    the fsync others wait for."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.written = asyncio.Event()  # set when records become durable: wakes the forwarder
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing = False
        # The loop asks the thread for an fsync by putting itself here (None: stop).
        self._requests: queue.SimpleQueue[asyncio.AbstractEventLoop | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def record(self, escalation: Escalation) -> int:
        try:
            return self.write(orjson.dumps(escalation.to_dict()))
        except EscalationRefused as exc:
            raise self._refused(escalation, exc) from exc

    def write(self, payload: bytes) -> int:
        """One record of any kind (a stream's other than escalations); its ticket, or
        EscalationRefused as the spool raised it."""
        ticket = self.spool.write(payload)
        self._wrote()
        return ticket

    def write_many(self, payloads: Sequence[bytes]) -> int:
        """``write`` for several records, in one write."""
        ticket = self.spool.write_many(payloads)
        self._wrote()
        return ticket

    def record_many(self, escalations: Sequence[Escalation]) -> list[int | EscalationRefused]:
        """One write for all of them; where the spool cannot take them together (a full
        budget, a segment to roll), each on its own, so as many as fit are kept."""
        payloads = [orjson.dumps(escalation.to_dict()) for escalation in escalations]
        try:
            ticket = self.spool.write_many(payloads)
        except EscalationRefused:
            return [self._one(e, p) for e, p in zip(escalations, payloads, strict=True)]
        self._wrote()
        return [ticket] * len(escalations)

    def _one(self, escalation: Escalation, payload: bytes) -> int | EscalationRefused:
        try:
            ticket = self.spool.write(payload)
        except EscalationRefused as exc:
            return self._refused(escalation, exc)
        self._wrote()
        return ticket

    def _refused(self, escalation: Escalation, exc: EscalationRefused) -> EscalationRefused:
        log.error(
            "escalation.refused",
            escalation_id=escalation.escalation_id,
            trace_id=escalation.trace_id,
            spool=str(self.spool.directory),
            error=str(exc),
        )
        return type(exc)(f"escalation not recorded: {exc}")

    def _wrote(self) -> None:
        if not self.spool.fsync:  # already as durable as the setting promises
            self.written.set()

    async def durable(self, ticket: int) -> None:
        if self.spool.synced_offset < ticket:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((ticket, waiter))
            if not self._syncing:
                self._start_sync(loop)
            await waiter

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
        self.spool.close()

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        self._syncing = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._sync, name="hitl-spool-sync", daemon=True)
            self._thread.start()
        self._requests.put(loop)

    def _sync(self) -> None:
        """The recorder's thread: for each request, one fsync, then its outcome back
        to the loop that asked."""
        while (loop := self._requests.get()) is not None:
            failure: Exception | None = None
            try:
                self.spool.sync()
            except Exception as exc:  # every waiter it should have covered learns of it
                failure = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(self._synced, loop, failure)

    def _synced(self, loop: asyncio.AbstractEventLoop, failure: Exception | None) -> None:
        """On the loop: release the waiters the fsync covered (or fail them), and
        start the next fsync for records written while it ran."""
        self._syncing = False
        covered = self.spool.synced_offset
        if failure is None:
            self.written.set()
        else:
            log.error(
                "escalation.fsync_failed", spool=str(self.spool.directory), error=str(failure)
            )
        waiting = []
        for ticket, waiter in self._waiters:
            if waiter.done():
                continue
            if ticket <= covered:
                waiter.set_result(None)
            elif failure is not None:
                waiter.set_exception(failure)
            else:
                waiting.append((ticket, waiter))
        self._waiters = waiting
        if waiting:
            self._start_sync(loop)
