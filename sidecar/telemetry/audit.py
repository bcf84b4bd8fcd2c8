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
FLUSH_SECONDS; it never loses an escalation.

A file that refuses a write (a full disk, a file size limit) loses nothing it can
keep: what was not written stays in memory, ahead of newer records, and the next
flush writes it. The records held are bounded by MAX_PENDING_BYTES; past it the
oldest whole records are dropped, counted and logged. Route never waits on any of
it. The failure is logged when it starts and when it ends, not at every retry."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import structlog

FLUSH_SECONDS = 0.1
# About 60,000 records (3 s at 20,000 decisions/s) held while the file refuses writes.
MAX_PENDING_BYTES = 64 * 1024 * 1024
_NEWLINE = ord("\n")
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

log = structlog.get_logger("hitl.audit")


class AuditLog(Protocol):
    failures: int  # flushes the file refused
    dropped: int  # records dropped, held past the bound while the file refused writes

    def write(self, record: Mapping[str, Any]) -> None:
        """Log record; its first key is "event", the record's kind."""

    def flush(self) -> None: ...

    def pending_bytes(self) -> int: ...

    def close(self) -> None: ...


class JsonLinesAudit:
    """Writes to path, or to stdout when path is ``-``.

    ``write`` only renders the record and keeps it in memory; ``flush`` hands what
    has gathered to the kernel in one write. The sidecar calls ``flush`` from a
    worker thread, so the event loop never waits on the file (an append can wait
    on the filesystem's journal for milliseconds). ``write`` and ``flush`` may run
    in different threads."""

    def __init__(self, path: str, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.path = path
        self.max_pending_bytes = max_pending_bytes
        self.failures = 0
        self.dropped = 0
        self._failing = False
        self._midline = False  # the file ends inside a record a refused write cut short
        self._file: BinaryIO
        if path == "-":
            self._file = sys.stdout.buffer  # shared with the operational logs, in order
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each write says how much the file took, and a refused one
            # leaves nothing behind in a buffer to be written twice.
            self._file = Path(path).open("ab", buffering=0)  # noqa: SIM115 (kept open)
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
            written = 0
            try:
                while written < len(pending):
                    written += self._file.write(memoryview(pending)[written:])
                self._file.flush()
            except OSError as exc:
                if written:
                    self._midline = pending[written - 1] != _NEWLINE
                self._hold(pending[written:], exc)
                return
            self._midline = False
            if self._failing:
                self._failing = False
                log.info("audit.write_recovered", path=self.path)

    def pending_bytes(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.flush()
        if self._pending:
            log.error(
                "audit.unwritten",
                path=self.path,
                records=self._pending.count(b"\n"),
                detail="the file refused them until shutdown; they are lost",
            )
        if self._file is not sys.stdout.buffer:
            self._file.close()

    def _hold(self, unwritten: bytes | bytearray, error: OSError) -> None:
        """Keep what the file refused, ahead of newer records; past the bound, drop
        the oldest whole records (never the rest of one whose start the file has)."""
        with self._lock:
            self._pending[:0] = unwritten
            keep = self._pending.find(b"\n") + 1 if self._midline else 0
            excess = len(self._pending) - self.max_pending_bytes
            dropped = 0
            if excess > 0:
                cut = self._pending.find(b"\n", keep + excess - 1) + 1 or len(self._pending)
                dropped = self._pending.count(b"\n", keep, cut)
                del self._pending[keep:cut]
            held = len(self._pending)
        self.failures += 1
        if not self._failing:
            self._failing = True
            log.error(
                "audit.write_failed",
                path=self.path,
                error=str(error),
                held_bytes=held,
                detail="records are held in memory and written when the file takes them",
            )
        if dropped:
            self.dropped += dropped
            log.error("audit.records_dropped", path=self.path, records=dropped, held_bytes=held)


class InMemoryAudit:
    """Keeps records in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failures = 0
        self.dropped = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def flush(self) -> None:
        return None

    def pending_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None
