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
it. The failure is logged when it starts and when it ends, not at every retry.

A file moved or removed by log rotation is followed, as logging's
WatchedFileHandler does: each flush checks the path, and when it names another
file or none, the flush writes to a new file there. A copy-and-truncate rotation
needs nothing: the file is opened for appending."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import structlog

from sidecar.telemetry.logs import STDOUT_LOCK

FLUSH_SECONDS = 0.1
# About 60,000 records (3 s at 20,000 decisions/s) held while the file refuses writes.
MAX_PENDING_BYTES = 64 * 1024 * 1024
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

log = structlog.get_logger("hitl.audit")


class AuditLog(Protocol):
    failures: int  # flushes the file refused
    dropped: int  # records dropped, held past the bound while the file refused writes

    def write(self, record: Mapping[str, Any]) -> None:
        """Log record; its first key is "event", the record's kind."""

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Log records in order (a batch's decisions)."""

    def flush(self) -> None: ...

    def pending_bytes(self) -> int: ...

    def close(self) -> None: ...


class JsonLinesAudit:
    """Writes to path, or to stdout when path is ``-``.

    ``write`` only renders the record and keeps it in memory; ``flush`` hands what
    has gathered to the kernel in one write. The sidecar calls ``flush`` from a
    worker thread, so the event loop never waits on the file (an append can wait
    on the filesystem's journal for milliseconds). ``write`` and ``flush`` may run
    in different threads.

    What a refused write leaves goes to a second buffer that only ``flush`` touches
    and writes first; records are dropped from its front. ``write`` never waits on
    it, however much it holds."""

    def __init__(self, path: str, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.path = path
        self.max_pending_bytes = max_pending_bytes
        self.failures = 0
        self.dropped = 0
        self._failing = False
        self._writing: AbstractContextManager[Any] = contextlib.nullcontext()
        # Unbuffered, stdout too: each write says how much the file took, and a
        # refused one leaves nothing in a buffer to be written twice.
        if path == "-":
            self._file: BinaryIO = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115
            self._writing = STDOUT_LOCK  # so no log line lands inside a record
        else:
            self._file = _open(path)
        self._identity = _identity(self._file.fileno())
        # One buffer, not a list of lines: a line (about 1 KB, past the interpreter's
        # small-object limit) kept until the flush is a heap allocation of its own,
        # and under load their churn left the process larger (measured: see
        # docs/performance.md#the-audit-logs-single-buffer).
        self._pending = bytearray()
        self._lock = threading.Lock()  # the pending buffer, between write and flush
        self._flushing = threading.Lock()  # one flush at a time, so lines stay in order
        # What the file refused, oldest first (flush's alone, under _flushing); its
        # first _midline bytes end a record whose start the file already has.
        self._held = bytearray()
        self._midline = 0

    def write(self, record: Mapping[str, Any]) -> None:
        line = orjson.dumps(record, option=_OPTIONS)
        with self._lock:
            self._pending += line

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        lines = b"".join([orjson.dumps(record, option=_OPTIONS) for record in records])
        with self._lock:
            self._pending += lines

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                fresh, self._pending = self._pending, bytearray()
            if self._held:
                self._held += fresh
            else:
                self._held = fresh
            data, written, refused = self._held, 0, None
            with self._writing:
                try:
                    self._follow_rotation()
                    while written < len(data):
                        taken = self._file.write(memoryview(data)[written:])
                        if taken is None:  # a non-blocking file that would block
                            raise BlockingIOError(errno.EAGAIN, "the audit file would block")
                        written += taken
                except OSError as exc:
                    refused = exc
            if refused is not None:  # reported outside the lock, which the log takes
                self._refused(written, refused)
                return
            self._held, self._midline = bytearray(), 0
            if written and self._failing:
                self._failing = False
                _report(log.info, "audit.write_recovered", path=self.path)

    def pending_bytes(self) -> int:
        return len(self._pending) + len(self._held)

    def close(self) -> None:
        self.flush()
        if self._held:
            _report(
                log.error,
                "audit.unwritten",
                path=self.path,
                records=self._held.count(b"\n"),
                detail="the file refused them until shutdown; they are lost",
            )
        self._file.close()

    def _follow_rotation(self) -> None:
        """When the path names another file, or none, open a new one there (an
        OSError if it cannot be: the records are held, as for a refused write). A
        record whose start the old file holds ends there, or, if the old file
        refuses its end, is dropped and counted: no line spans two files. Files
        only: their flush holds no lock, so this may log."""
        if self.path == "-":
            return
        try:
            if _identity(os.stat(self.path)) == self._identity:
                return
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError:  # cannot tell: stay with the file there is
            return
        new = _open(self.path)
        if self._midline:
            self._end_record()
        old, self._file = self._file, new
        self._identity = _identity(new.fileno())
        old.close()
        _report(log.info, "audit.reopened", path=self.path)

    def _end_record(self) -> None:
        """Write the end of the record the current file holds the start of, or drop it."""
        end = self._held[: self._midline]
        written = 0
        with contextlib.suppress(OSError):
            while written < len(end) and (taken := self._file.write(end[written:])):
                written += taken
        del self._held[: self._midline]
        self._midline = 0
        if written < len(end):
            self.dropped += 1
            _report(log.error, "audit.records_dropped", path=self.path, records=1,
                    held_bytes=len(self._held))  # fmt: skip

    def _refused(self, written: int, error: OSError) -> None:
        """Keep what the file refused; past the bound, drop the oldest whole records
        (never the end of one whose start the file has)."""
        held = self._held
        if written:
            end = held.rfind(b"\n", 0, written) + 1  # the records the file has whole
            self._midline = held.find(b"\n", written) + 1 - written if end < written else 0
            del held[:written]  # from the front: no copy
        dropped = 0
        excess = len(held) - self.max_pending_bytes
        if excess > 0:
            keep = self._midline
            cut = held.find(b"\n", keep + excess - 1) + 1 or len(held)
            dropped = held.count(b"\n", keep, cut)
            held[cut - keep : cut] = held[:keep]  # the end of the cut record moves up
            del held[: cut - keep]
        self.failures += 1
        if not self._failing:
            self._failing = True
            _report(
                log.error,
                "audit.write_failed",
                path=self.path,
                error=str(error),
                held_bytes=len(held),
                detail="records are held in memory and written when the file takes them",
            )
        if dropped:
            self.dropped += dropped
            _report(
                log.error,
                "audit.records_dropped",
                path=self.path,
                records=dropped,
                held_bytes=len(held),
            )


def _open(path: str) -> BinaryIO:
    """The audit file at path, for appending, unbuffered, its directory made if missing.
    A new file is readable by its owner and group only (0640, like the spool): it
    holds logits, attributes and context."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    return os.fdopen(fd, "ab", buffering=0)


def _identity(file: int | os.stat_result) -> tuple[int, int]:
    """The device and inode of an open file descriptor, or of a stat result."""
    st = os.fstat(file) if isinstance(file, int) else file
    return st.st_dev, st.st_ino


def _report(method: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log, unless the log is what refuses writes (the audit on stdout, with the
    operational logs): the counters still say it."""
    with contextlib.suppress(OSError):
        method(event, **fields)


class InMemoryAudit:
    """Keeps records in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failures = 0
        self.dropped = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.records.extend(dict(record) for record in records)

    def flush(self) -> None:
        return None

    def pending_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None
