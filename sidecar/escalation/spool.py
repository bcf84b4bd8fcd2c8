"""A crash-proof local log of escalations: append-only, segmented, every record
framed with its length and CRC-32, made durable by group commit.

Layout under the spool directory::

    00000000000000000000.seg   records from global byte offset 0
    00000000000000524288.seg   records from offset 524288 (a segment per roll)
    acked                      the offset up to which a sink has confirmed delivery

A record is ``<length u32 LE><crc32 u32 LE><payload>``, the payload never empty, so
zeros read as no record. ``write`` puts a record in the kernel's hands and returns
the offset just past it; ``sync`` makes everything written so far durable with one
fdatasync, so concurrent writers share it (group commit); ``append`` is both. A
record that reached the kernel survives a killed process; only a synced one
survives a lost machine.

The segment being written is kept PAD_BYTES of zeros longer than its records, and
records are written over those zeros: the file's size rarely changes, so an
fdatasync flushes the records alone instead of also committing the filesystem's
journal for a new size, which on a busy machine waits for the journal's kernel
thread to get a core (measured: see docs/performance.md#the-spools-zeros-ahead).

On open, the last segment is scanned and cut at the first record that is short or
fails its checksum (a torn tail from a crash mid-write), and its zeros are cut with
it; earlier segments were trimmed (and, with fsync on, synced) when they rolled.
``recovered_records`` is how many undelivered records the spool held when it was
opened (left by an earlier process). ``ack`` records delivery and deletes the
segments wholly below it. ``budget_bytes`` caps the records on disk: a write that
would pass it raises SpoolFull and writes nothing, so a full disk refuses, it never
loses. (The zeros ahead take up to PAD_BYTES more.)

One process owns a spool at a time: opening takes an exclusive lock on the
directory (``lock``), and a second opener gets SpoolBusy."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from sidecar.errors import EscalationRefused, HitlError
from sidecar.files import fsync_directory, replace_file

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
PAD_BYTES = 256 * 1024  # zeros laid ahead of the last record (about a second of escalations)
SEGMENT_SUFFIX = ".seg"
ACKED = "acked"
LOCK = "lock"


class SpoolFull(EscalationRefused):
    """The disk budget would be exceeded: nothing was written."""


class SpoolBusy(HitlError):
    """Another process holds the spool."""


@dataclass(frozen=True)
class SpoolStats:
    records: int  # appended and not yet acknowledged
    bytes_on_disk: int  # delivered records too, until their segment is removed
    end_offset: int
    acked_offset: int
    truncated_bytes: int  # a torn tail cut when the spool was opened (zeros not counted)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the records that wait for delivery."""
        return self.end_offset - self.acked_offset


class Spool:
    def __init__(
        self,
        directory: Path,
        segment_bytes: int = 64 * 1024 * 1024,
        budget_bytes: int = 1024 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        if segment_bytes < HEADER.size + 1 or budget_bytes < segment_bytes:
            raise ValueError("need budget_bytes >= segment_bytes > the record header")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.budget_bytes = budget_bytes
        self.fsync = fsync
        self._owner = _lock_directory(directory)
        self._lock = threading.Lock()  # the offsets, counts and segment list
        self._ack_lock = threading.Lock()  # one ack at a time; taken before _lock
        self._sync_lock = threading.Lock()  # one fsync at a time; taken before _lock
        self._broken = ""
        self._retired: list[int] = []  # rolled segments' descriptors, closed by the next sync
        self._acked = acked_offset(self.directory)
        self._bases = self._segment_bases()
        self.truncated_bytes = self._recover_tail()
        # How far the segment is written: its records, then the zeros laid ahead.
        self._padded = self._path(self._bases[-1]).stat().st_size
        self._end = self._bases[-1] + self._padded
        self._records = sum(1 for _ in self.read(self._acked))
        # Left undelivered by an earlier process (a drain cut short, a crash): this
        # one delivers them. Reported as the hitl.spool.recovered_records gauge.
        self.recovered_records = self._records
        self._synced = self._end
        self._fd = os.open(self._path(self._bases[-1]), os.O_RDWR)

    # -- writing ---------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write one record; return the offset past it once it is as durable as the
        spool's setting promises."""
        end = self.write(payload)
        if self.fsync:
            self.sync()
        return end

    def write(self, payload: bytes) -> int:
        """Hand one record to the kernel and return the offset past it, without
        waiting for the disk. Raises SpoolFull or EscalationRefused, writing nothing."""
        frame = _frame(payload)
        with self._lock:
            self._check_room(len(frame))
            used = self._end - self._bases[-1]
            if used and used + len(frame) > self.segment_bytes:
                self._roll()  # a record larger than a segment gets one of its own
            self._write(frame)
            self._end += len(frame)
            self._records += 1
            return self._end

    def write_many(self, payloads: Sequence[bytes]) -> int:
        """Hand records to the kernel together, in one write where they fit the
        current segment and the budget, and return the offset past the last. All or
        none: raises SpoolFull or EscalationRefused, writing nothing, when they do
        not fit together (a caller may then write them one by one)."""
        frames = b"".join([_frame(payload) for payload in payloads])
        with self._lock:
            self._check_room(len(frames), batch=len(payloads))
            used = self._end - self._bases[-1]
            if used + len(frames) > self.segment_bytes:
                raise EscalationRefused("the records do not fit the current segment together")
            self._write(frames)
            self._end += len(frames)
            self._records += len(payloads)
            return self._end

    def _check_room(self, size: int, batch: int = 0) -> None:
        """With the lock held: refuse size more bytes (one record, or a batch of that
        many) when the spool is unusable or they would pass its budget."""
        self._check_usable()
        if self._bytes_on_disk() + size <= self.budget_bytes:
            return
        if batch:
            raise SpoolFull(
                f"spool budget of {self.budget_bytes} bytes cannot take {batch}"
                f" more records ({self._records} await delivery)"
            )
        raise SpoolFull(
            f"spool budget of {self.budget_bytes} bytes is full "
            f"({self._records} records await delivery)"
        )

    def _check_usable(self) -> None:
        """With the lock held: EscalationRefused once a failed write or fsync has left
        the spool unusable."""
        if self._broken:
            raise EscalationRefused(f"spool unusable until restarted: {self._broken}")

    def _write(self, frame: bytes) -> None:
        position = self._end - self._bases[-1]
        if position + len(frame) > self._padded:
            self._pad(position, position + len(frame) + PAD_BYTES)
        try:
            _pwrite(self._fd, frame, position)
            # Zeros are only ever laid from here on: never over a record.
            self._padded = max(self._padded, position + len(frame))
        except OSError as exc:
            # Cut the partial record so the next append starts on a record boundary;
            # if even that fails, refuse every later write rather than append after
            # garbage that would hide it from readers.
            self._padded = position
            try:
                os.ftruncate(self._fd, position)
            except OSError as cut:
                self._broken = f"a failed write could not be undone ({cut.strerror})"
            raise EscalationRefused(f"spool write failed: {exc.strerror}") from exc

    def _pad(self, position: int, size: int) -> None:
        """Lay zeros up to size (within the segment, unless a record is larger). When
        the disk has no room for them, the record is written without: it may still
        fit, and zeros left by a partial pad read as no record."""
        size = max(min(size, self.segment_bytes), position)
        if size <= self._padded:
            return
        try:
            _pwrite(self._fd, bytes(size - self._padded), self._padded)
            self._padded = size
        except OSError:
            self._padded = position
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, position)

    def _roll(self) -> None:
        # The closed segment loses its zeros and is synced here, so a later fsync of
        # the new one covers everything. The new one is opened first: a failure
        # leaves the spool writing where it was. With fsync off nothing is synced:
        # the roll runs inside a Route's write, and a segment's worth of unsynced
        # records would hold it for as long as the disk takes to write them all.
        try:
            fd = os.open(self._path(self._end), os.O_RDWR | os.O_CREAT, 0o640)
            os.ftruncate(self._fd, self._end - self._bases[-1])
            if self.fsync:
                os.fsync(self._fd)
                fsync_directory(self.directory)
        except OSError as exc:
            raise EscalationRefused(f"spool could not start a segment: {exc.strerror}") from exc
        if self.fsync:  # a sync may be reading it: the next one closes it
            self._retired.append(self._fd)
        else:
            os.close(self._fd)
        self._bases.append(self._end)
        self._fd, self._padded = fd, 0

    def sync(self) -> int:
        """Make every record written so far durable; return the offset that covers.
        Callers queued behind a running fsync find their records covered by it and
        return without another (group commit). With fsync off, nothing to do."""
        if not self.fsync:
            return self.synced_offset
        with self._lock:
            wanted = self._end
        with self._sync_lock:
            if self._synced >= wanted:
                return self._synced
            with self._lock:
                self._check_usable()
                target, fd = self._end, self._fd
                retired, self._retired = self._retired, []
            try:
                # fdatasync: the records and the file size that reaches them, without
                # the timestamps fsync would also write.
                os.fdatasync(fd)
            except OSError as exc:
                # After a failed fsync the kernel may have dropped the pages it could
                # not write, so a later fsync that succeeds proves nothing about them:
                # refuse from here on rather than report them durable to a retry.
                with self._lock:
                    self._broken = f"an fsync failed ({exc.strerror})"
                raise EscalationRefused(f"spool fsync failed: {exc.strerror}") from exc
            finally:
                for old in retired:
                    os.close(old)
            self._synced = target
            return target

    @property
    def synced_offset(self) -> int:
        """Records below this offset are on disk (everything written, with fsync off)."""
        return self._synced if self.fsync else self._end

    # -- reading and acknowledging ---------------------------------------------

    def read(
        self, offset: int, limit: int | None = None, until: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Records from offset on, each with the offset past it (what ``ack`` takes),
        at most limit of them, none ending past until."""
        count = 0
        for base in _holding(list(self._bases), offset):
            for end, payload in _records(self._path(base), base, max(offset, base)):
                if (until is not None and end > until) or (limit is not None and count >= limit):
                    return
                yield end, payload
                count += 1

    def ack(self, offset: int, records: int | None = None) -> None:
        """Delivery confirmed up to offset: persist it and delete spent segments.
        records, when the caller knows it, is how many records that confirms (the
        forwarder does); otherwise they are read back and counted.

        The files are written and deleted outside the lock that ``write`` takes: Route
        appends on the event loop, and must not wait for a rename or an unlink that a
        busy filesystem journal can hold up for milliseconds."""
        with self._ack_lock:
            if offset <= self._acked:
                return
            if records is None:
                delivered = takewhile(lambda record: record[0] <= offset, self.read(self._acked))
                records = sum(1 for _ in delivered)
            # Not fsynced: an ack lost with the machine only means a resend, which
            # sinks dedupe; syncing it would cost two fsyncs per delivered batch.
            replace_file(self.directory / ACKED, str(offset).encode())
            with self._lock:
                self._records -= records
                self._acked = offset
                spent = []
                while len(self._bases) > 1 and self._bases[1] <= offset:
                    spent.append(self._bases.pop(0))
            for base in spent:
                self._path(base).unlink()

    @property
    def acked_offset(self) -> int:
        return self._acked

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                self._records, self._bytes_on_disk(), self._end, self._acked, self.truncated_bytes
            )

    def close(self) -> None:
        with self._sync_lock, self._lock:  # not under a running fsync's descriptor
            with contextlib.suppress(OSError):  # zeros left behind read as no record
                os.ftruncate(self._fd, self._end - self._bases[-1])
            if self.fsync:
                os.fsync(self._fd)
            for fd in [*self._retired, self._fd, self._owner]:
                os.close(fd)

    # -- files -----------------------------------------------------------------

    def _path(self, base: int) -> Path:
        return self.directory / f"{base:020d}{SEGMENT_SUFFIX}"

    def _segment_bases(self) -> list[int]:
        bases = sorted(int(p.stem) for p in self.directory.glob(f"*{SEGMENT_SUFFIX}"))
        if not bases:
            first = self._acked
            self._path(first).touch(0o640)
            fsync_directory(self.directory)
            bases = [first]
        return bases

    def _recover_tail(self) -> int:
        """Cut the last segment after its last whole record; return how many bytes of
        a torn record that cut (the zeros laid ahead of the records do not count)."""
        base = self._bases[-1]
        path = self._path(base)
        valid = 0
        for end, _ in _records(path, base, base):
            valid = end - base
        size = path.stat().st_size
        if size <= valid:
            return 0
        with path.open("r+b") as handle:
            handle.seek(valid)
            torn = len(handle.read(size - valid).rstrip(b"\0"))
            handle.truncate(valid)
            os.fsync(handle.fileno())
        return torn

    def _bytes_on_disk(self) -> int:
        return self._end - self._bases[0]  # segments are contiguous


def _frame(payload: bytes) -> bytes:
    """One record as written: its header, then the payload. EscalationRefused when
    the payload is empty or larger than MAX_RECORD."""
    if not 0 < len(payload) <= MAX_RECORD:
        raise EscalationRefused(f"a record must hold 1 to {MAX_RECORD} bytes, not {len(payload)}")
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_unacked(directory: Path) -> Iterator[tuple[int, bytes]]:
    """The unacknowledged records of a spool directory, read without taking it (for
    inspection while its owner runs: only whole, valid records are returned)."""
    acked = acked_offset(directory)
    bases = sorted(int(p.stem) for p in directory.glob(f"*{SEGMENT_SUFFIX}"))
    for base in _holding(bases, acked):
        with contextlib.suppress(FileNotFoundError):  # acked and deleted meanwhile
            yield from _records(directory / f"{base:020d}{SEGMENT_SUFFIX}", base, max(acked, base))


def _holding(bases: list[int], offset: int) -> Iterator[int]:
    """The segments (by base, in order) that hold records from offset on: all but
    those the next segment starts at or below."""
    for base, following in zip(bases, [*bases[1:], None], strict=True):
        if following is None or following > offset:
            yield base


def _records(path: Path, base: int, start: int) -> Iterator[tuple[int, bytes]]:
    """Valid records of one segment from global offset start; stops at the first
    short or corrupt record."""
    with path.open("rb") as handle:
        handle.seek(start - base)
        position = start
        while len(header := handle.read(HEADER.size)) == HEADER.size:
            length, crc = HEADER.unpack(header)
            if not 0 < length <= MAX_RECORD:  # zeros are what a crash can leave behind
                return
            payload = handle.read(length)
            if len(payload) != length or zlib.crc32(payload) != crc:
                return
            position += HEADER.size + length
            yield position, payload


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolBusy(f"{directory} is in use by another process") from None
    return fd


def acked_offset(directory: Path) -> int:
    """The acknowledged offset of the spool in directory, read from its file (another
    process may hold the spool); 0 (deliver everything again) when the file is missing
    or was left empty or garbled by a crash."""
    try:
        return int((directory / ACKED).read_text())
    except (FileNotFoundError, ValueError):
        return 0
