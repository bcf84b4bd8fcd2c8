"""A crash-proof local log of escalations: append-only, segmented, every record
framed with its length and CRC-32, made durable by group commit.

Layout under the spool directory::

    00000000000000000000.seg   records from global byte offset 0
    00000000000000524288.seg   records from offset 524288 (a segment per roll)
    acked                      the offset up to which a sink has confirmed delivery

A record is ``<length u32 LE><crc32 u32 LE><payload>``. ``append`` returns the
offset just past its record; with ``fsync`` on, it returns only once an fsync has
covered that offset. Concurrent appenders share one fsync: the first to need it
syncs everything written so far and the others wait for it (group commit). With
``fsync`` off the write still reaches the kernel before ``append`` returns, which
survives a killed process but not a lost machine.

On open, the last segment is scanned and cut at the first record that is short or
fails its checksum (a torn tail from a crash mid-write); earlier segments were
synced when they rolled. ``ack`` records delivery and deletes the segments wholly
below it. ``budget_bytes`` caps the segments on disk: an append that would pass it
raises SpoolFull and writes nothing, so a full disk refuses, it never loses."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from sidecar.errors import EscalationRefused

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
ACKED = "acked"


class SpoolFull(EscalationRefused):
    """The disk budget would be exceeded: nothing was written."""


@dataclass(frozen=True)
class SpoolStats:
    records: int  # appended and not yet acknowledged
    bytes_on_disk: int
    end_offset: int
    acked_offset: int
    truncated_bytes: int  # dropped from a torn tail when the spool was opened


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
        self._lock = threading.Lock()  # appends, rolls, acks
        self._synced_cond = threading.Condition()
        self._syncing = False
        self._acked = self._read_acked()
        self._bases = self._segment_bases()
        self.truncated_bytes = self._recover_tail()
        self._end = self._bases[-1] + self._path(self._bases[-1]).stat().st_size
        self._records = sum(1 for _ in self.read(self._acked))
        self._synced = self._end
        self._fd = os.open(self._path(self._bases[-1]), os.O_WRONLY | os.O_APPEND)

    # -- writing ---------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write one record; return the offset past it once it is as durable as the
        spool's setting promises."""
        if len(payload) > MAX_RECORD:
            raise EscalationRefused(f"record of {len(payload)} bytes exceeds {MAX_RECORD}")
        frame = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._bytes_on_disk() + len(frame) > self.budget_bytes:
                raise SpoolFull(
                    f"spool budget of {self.budget_bytes} bytes is full "
                    f"({self._records} records await delivery)"
                )
            used = self._end - self._bases[-1]
            if used and used + len(frame) > self.segment_bytes:
                self._roll()  # a record larger than a segment gets one of its own
            self._write(frame)
            self._end += len(frame)
            self._records += 1
            end = self._end
        if self.fsync:
            self._sync_to(end)
        return end

    def _write(self, frame: bytes) -> None:
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Cut the partial record so the next append starts on a record boundary.
            os.ftruncate(self._fd, self._end - self._bases[-1])
            raise EscalationRefused(f"spool write failed: {exc.strerror}") from exc

    def _roll(self) -> None:
        # The closed segment is synced here, so a later fsync of the new one covers all.
        os.fsync(self._fd)
        os.close(self._fd)
        self._bases.append(self._end)
        self._fd = os.open(self._path(self._end), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        _fsync_directory(self.directory)

    def _sync_to(self, offset: int) -> None:
        """Group commit: one fsync covers every record written before it started.
        Lock order is always _synced_cond, then _lock."""
        with self._synced_cond:
            while self._synced < offset:
                if self._syncing:
                    self._synced_cond.wait()
                    continue
                self._syncing = True
                with self._lock:
                    # A duplicate stays valid if a roll closes the segment meanwhile.
                    target, fd = self._end, os.dup(self._fd)
                self._synced_cond.release()
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise EscalationRefused(f"spool fsync failed: {exc.strerror}") from exc
                finally:
                    os.close(fd)
                    self._synced_cond.acquire()
                    self._syncing = False
                    self._synced_cond.notify_all()
                self._synced = max(self._synced, target)

    # -- reading and acknowledging ---------------------------------------------

    def read(self, offset: int, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Records from offset on, each with the offset past it (what ``ack`` takes)."""
        count = 0
        for i, base in enumerate(list(self._bases)):
            following = self._bases[i + 1] if i + 1 < len(self._bases) else None
            if following is not None and following <= offset:
                continue
            for end, payload in _records(self._path(base), base, max(offset, base)):
                yield end, payload
                count += 1
                if limit is not None and count >= limit:
                    return

    def ack(self, offset: int) -> None:
        """Delivery confirmed up to offset: persist it and delete spent segments."""
        with self._lock:
            if offset <= self._acked:
                return
            delivered = takewhile(lambda record: record[0] <= offset, self.read(self._acked))
            self._records -= sum(1 for _ in delivered)
            _write_atomically(self.directory / ACKED, str(offset).encode())
            self._acked = offset
            while len(self._bases) > 1 and self._bases[1] <= offset:
                self._path(self._bases.pop(0)).unlink()

    @property
    def acked_offset(self) -> int:
        return self._acked

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                self._records, self._bytes_on_disk(), self._end, self._acked, self.truncated_bytes
            )

    def close(self) -> None:
        with self._lock:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)

    # -- files -----------------------------------------------------------------

    def _path(self, base: int) -> Path:
        return self.directory / f"{base:020d}{SEGMENT_SUFFIX}"

    def _segment_bases(self) -> list[int]:
        bases = sorted(int(p.stem) for p in self.directory.glob(f"*{SEGMENT_SUFFIX}"))
        if not bases:
            first = self._acked
            self._path(first).touch(0o640)
            _fsync_directory(self.directory)
            bases = [first]
        return bases

    def _read_acked(self) -> int:
        try:
            return int((self.directory / ACKED).read_text() or 0)
        except FileNotFoundError:
            return 0

    def _recover_tail(self) -> int:
        base = self._bases[-1]
        path = self._path(base)
        size = path.stat().st_size
        valid = 0
        for end, _ in _records(path, base, base):
            valid = end - base
        if valid < size:
            with path.open("r+b") as handle:
                handle.truncate(valid)
                os.fsync(handle.fileno())
        return size - valid

    def _bytes_on_disk(self) -> int:
        return self._end - self._bases[0]  # segments are contiguous


def _records(path: Path, base: int, start: int) -> Iterator[tuple[int, bytes]]:
    """Valid records of one segment from global offset start; stops at the first
    short or corrupt record."""
    with path.open("rb") as handle:
        handle.seek(start - base)
        position = start
        while len(header := handle.read(HEADER.size)) == HEADER.size:
            length, crc = HEADER.unpack(header)
            if length > MAX_RECORD:
                return
            payload = handle.read(length)
            if len(payload) != length or zlib.crc32(payload) != crc:
                return
            position += HEADER.size + length
            yield position, payload


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
