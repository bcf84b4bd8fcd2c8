"""The audit log: one JSON line per decision, with everything needed to re-run it
(the input, the thresholds used, policy revision and calibration version) and to
find its trace.

Each record is one orjson call (the logits go out as float32 in their shortest
round-tripping form), with no logging framework in between: it runs on every Route,
and a structlog chain cost more than the rendering itself. Records go to their own
file, not the operational log, whatever its level says. Records gather in memory;
the sidecar hands them to the kernel every FLUSH_SECONDS, from a worker thread, and
on shutdown, off the request path (DESIGN.md allows no blocking I/O in Route but
the escalation append). A killed process can lose the audit records of its last
FLUSH_SECONDS; it never loses an escalation."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

FLUSH_SECONDS = 0.1
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class AuditLog(Protocol):
    def write(self, record: Mapping[str, Any]) -> None:
        """Log record; its first key is "event", the record's kind."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonLinesAudit:
    """Writes to path, or to stdout when path is ``-``.

    ``write`` only renders the record and keeps it in memory; ``flush`` hands what
    has gathered to the kernel in one write. The sidecar calls ``flush`` from a
    worker thread, so the event loop never waits on the file (an append can wait
    on the filesystem's journal for milliseconds). ``write`` and ``flush`` may run
    in different threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO
        if path == "-":
            self._file = sys.stdout.buffer  # shared with the operational logs, in order
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("ab")  # noqa: SIM115 (kept open)
        # One buffer, not a list of lines: a line (about 1 KB, past the interpreter's
        # small-object limit) kept until the flush is a heap allocation of its own,
        # and at 20,000 records/s their churn left the process 23 MB larger (peak
        # RSS under RouteBatch load 189 MB against 166 with the buffer).
        self._pending = bytearray()
        self._lock = threading.Lock()  # the pending buffer, between write and flush
        self._flushing = threading.Lock()  # one flush at a time, so lines stay in order

    def write(self, record: Mapping[str, Any]) -> None:
        line = orjson.dumps(record, option=_OPTIONS)
        with self._lock:
            self._pending += line

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, bytearray()
            self._file.write(pending)
            self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not sys.stdout.buffer:
            self._file.close()


class InMemoryAudit:
    """Keeps records in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
