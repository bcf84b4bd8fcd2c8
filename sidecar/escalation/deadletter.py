"""The dead-letter spool: escalations a sink refused for good (it answered that the
item is invalid, or the record could not be read as an escalation), each with the
sink and the reason, kept durably until an operator replays them.

Replay moves them back into the main spool, so the forwarder delivers them again
(after the sink or the data is fixed). With the sidecar stopped, ``hitl escalations
replay`` does it directly; while a sidecar owns the spools, it leaves a request file
that the running forwarder acts on within its idle interval."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from sidecar.escalation.spool import Spool, read_unacked

log = structlog.get_logger("hitl.forwarder")

REPLAY_REQUEST = "replay-requested"


class DeadLetters:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def add(self, escalation: dict[str, Any], sink: str, reason: str) -> None:
        await self._add({"escalation": escalation}, sink, reason)
        log.error(
            "escalation.dead_lettered",
            escalation_id=escalation.get("escalation_id", ""),
            trace_id=escalation.get("trace_id", ""),
            sink=sink,
            reason=reason,
        )

    async def add_raw(self, payload: bytes, sink: str, reason: str) -> None:
        await self._add({"raw": base64.b64encode(payload).decode()}, sink, reason)
        log.error("escalation.dead_lettered", sink=sink, reason=reason, bytes=len(payload))

    async def _add(self, entry: dict[str, Any], sink: str, reason: str) -> None:
        record = {**entry, "sink": sink, "reason": reason, "dead_lettered_at": time.time()}
        await asyncio.to_thread(self.spool.append, orjson.dumps(record))

    def replay_into(self, spool: Spool) -> int:
        """Move every dead letter that holds an escalation back into spool; return how
        many. A crash midway may leave an item in both: the sink dedupes it."""
        records = list(self.spool.read(self.spool.acked_offset))
        moved = 0
        for _, payload in records:
            escalation = orjson.loads(payload).get("escalation")
            if escalation is not None:
                spool.append(orjson.dumps(escalation))
                moved += 1
        if records:
            self.spool.ack(records[-1][0])
        return moved

    async def replay_if_requested(self, spool: Spool) -> None:
        request = self.spool.directory / REPLAY_REQUEST
        if not request.exists():
            return
        moved = await asyncio.to_thread(self.replay_into, spool)
        request.unlink(missing_ok=True)
        log.info("escalation.dead_letters_replayed", records=moved)

    def close(self) -> None:
        self.spool.close()


def entries(directory: Path) -> list[dict[str, Any]]:
    """The dead letters in directory, oldest first (safe while a sidecar runs)."""
    return [orjson.loads(payload) for _, payload in read_unacked(directory)]


def request_replay(directory: Path) -> None:
    (directory / REPLAY_REQUEST).touch()
