"""The audit log: one JSON line per decision, with everything needed to re-run it
(the input, the thresholds used, policy revision and calibration version) and to
find its trace.

Each record is one orjson call (the logits go out as float32 in their shortest
round-tripping form), with no logging framework in between: it runs on every Route,
and a structlog chain cost more than the rendering itself. Records go to their own
file, not the operational log, whatever its level says. Writes go to an in-process
buffer; the sidecar flushes it to the kernel every FLUSH_SECONDS and on shutdown,
off the request path (DESIGN.md allows no blocking I/O in Route but the escalation
append). A killed process can lose the audit records of its last FLUSH_SECONDS;
it never loses an escalation."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

FLUSH_SECONDS = 0.1
_BUFFER_BYTES = 1 << 20
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class AuditLog(Protocol):
    def write(self, event: str, record: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonLinesAudit:
    """Writes to path, or to stdout when path is ``-``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO
        if path == "-":
            self._file = sys.stdout.buffer
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("ab", buffering=_BUFFER_BYTES)  # noqa: SIM115 (kept open)
        self._write = self._file.write

    def write(self, event: str, record: Mapping[str, Any]) -> None:
        self._write(orjson.dumps({"event": event, **record}, option=_OPTIONS))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        if self._file is not sys.stdout.buffer:
            self._file.close()


class InMemoryAudit:
    """Keeps records in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, event: str, record: Mapping[str, Any]) -> None:
        self.records.append({"event": event, **record})

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
