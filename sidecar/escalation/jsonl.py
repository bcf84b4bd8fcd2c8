"""An escalation sink that appends JSON lines to a local file.

Each line goes to the kernel in one unbuffered write before submit returns, so a
killed sidecar process loses nothing it acknowledged; a lost machine may lose what
was not yet written back to disk (no fsync). The durable spool and forwarder
replace this sink behind the same interface."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import orjson
import structlog

from sidecar.errors import EscalationRefused
from sidecar.escalation.record import Escalation

log = structlog.get_logger("hitl.escalation")


class JsonlFileSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def submit(self, escalation: Escalation) -> None:
        line = orjson.dumps(escalation.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._refuse(escalation, exc.strerror or str(exc))
        if written != len(line):
            self._refuse(escalation, f"short write ({written} of {len(line)} bytes)")

    def _refuse(self, escalation: Escalation, why: str) -> NoReturn:
        log.error(
            "escalation.refused",
            escalation_id=escalation.escalation_id,
            trace_id=escalation.trace_id,
            path=str(self.path),
            error=why,
        )
        raise EscalationRefused(f"escalation not recorded: {why}")

    def close(self) -> None:
        os.close(self._fd)
