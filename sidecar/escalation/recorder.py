"""Where Route puts an escalation before it answers.

``record`` hands the escalation to the recorder without waiting for a disk and
returns a ticket; ``durable`` returns once that ticket is as durable as the setting
promises, or raises EscalationRefused (Route then answers UNAVAILABLE: the caller
must not act on a review nobody will see). The two halves let the Router write
without an await, which keeps replay and escalation atomic on the event loop, and
let the servicer wait for the disk without blocking the loop."""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson
import structlog

from sidecar.errors import EscalationRefused
from sidecar.escalation.record import Escalation
from sidecar.escalation.spool import Spool

log = structlog.get_logger("hitl.escalation")


class Recorder(Protocol):
    def record(self, escalation: Escalation) -> int: ...

    async def durable(self, ticket: int) -> None: ...

    def close(self) -> None: ...


class MemoryRecorder:
    """Keeps escalations in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.escalations: list[Escalation] = []

    def record(self, escalation: Escalation) -> int:
        self.escalations.append(escalation)
        return len(self.escalations)

    async def durable(self, ticket: int) -> None:
        return None

    def close(self) -> None:
        return None


class SpoolRecorder:
    """Escalations into the local spool. With fsync on, ``durable`` waits for an
    fsync that covers the ticket; one runs at a time, off the event loop, and covers
    every record written before it started, so concurrent Route calls share it."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.written = asyncio.Event()  # wakes the forwarder
        self._sync: asyncio.Future[int] | None = None

    def record(self, escalation: Escalation) -> int:
        try:
            ticket = self.spool.write(orjson.dumps(escalation.to_dict()))
        except EscalationRefused as exc:
            log.error(
                "escalation.refused",
                escalation_id=escalation.escalation_id,
                trace_id=escalation.trace_id,
                spool=str(self.spool.directory),
                error=str(exc),
            )
            raise type(exc)(f"escalation not recorded: {exc}") from exc
        self.written.set()
        return ticket

    async def durable(self, ticket: int) -> None:
        while self.spool.synced_offset < ticket:
            if self._sync is None or self._sync.done():
                self._sync = asyncio.get_running_loop().run_in_executor(None, self.spool.sync)
            try:
                # shield: one caller's cancellation must not cancel the shared fsync.
                await asyncio.shield(self._sync)
            except EscalationRefused as exc:
                log.error(
                    "escalation.fsync_failed", spool=str(self.spool.directory), error=str(exc)
                )
                raise
        self.written.set()

    def close(self) -> None:
        self.spool.close()
