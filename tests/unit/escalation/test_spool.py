"""The escalation spool: framing, recovery of a torn tail, segments and acks, the
disk budget, group commit under concurrency, and a process killed mid-append."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.errors import EscalationRefused
from sidecar.escalation.spool import HEADER, PAD_BYTES, Spool, SpoolBusy, SpoolFull


def payloads(n: int, size: int = 40) -> list[bytes]:
    return [f"escalation-{i:06d}-".encode().ljust(size, b"x") for i in range(n)]


def test_records_read_back_in_order_after_reopening(tmp_path: Path) -> None:
    """What was appended reads back in order, with offsets, after close and reopen."""
    spool = Spool(tmp_path, segment_bytes=4096, budget_bytes=1 << 20)
    ends = [spool.append(p) for p in payloads(300)]
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=4096, budget_bytes=1 << 20)
    records = list(reopened.read(0))
    assert [end for end, _ in records] == ends
    assert [payload for _, payload in records] == payloads(300)
    assert reopened.stats().records == 300
    assert len(list(tmp_path.glob("*.seg"))) > 1  # it rolled


def test_with_fsync_off_rolling_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roll runs inside a Route's write: with fsync off it must not wait for the
    disk to write the closed segment (the calls are counted, not replaced), and what
    was appended still reads back, in the kernel's hands as fsync off promises."""
    spool = Spool(tmp_path, segment_bytes=4096, budget_bytes=1 << 20, fsync=False)
    synced: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counted(fd: int, name: str = name, real: Callable[[int], None] = real) -> None:
            synced.append(name)
            real(fd)

        monkeypatch.setattr(os, name, counted)
    ends = [spool.append(p) for p in payloads(300)]
    assert len(list(tmp_path.glob("*.seg"))) > 1  # it rolled
    assert synced == []
    spool.close()
    monkeypatch.undo()
    assert [end for end, _ in Spool(tmp_path, fsync=False).read(0)] == ends


def test_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    """Oversized records never share or duplicate a segment, and all read back."""
    spool = Spool(tmp_path, segment_bytes=64, budget_bytes=1 << 16, fsync=False)
    records = [b"a" * 200, b"b" * 300, b"small", b"c" * 100]
    for record in records:
        spool.append(record)
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=64, budget_bytes=1 << 16, fsync=False)
    assert [p for _, p in reopened.read(0)] == records
    assert len(list(tmp_path.glob("*.seg"))) == 4


@pytest.mark.parametrize("damage", ["partial header", "partial payload", "bad checksum"])
def test_torn_tail_is_cut_and_appending_resumes(tmp_path: Path, damage: str) -> None:
    """A record half-written by a crash (or with a bad checksum) is dropped on open;
    every whole record before it survives and the next append lands after them."""
    spool = Spool(tmp_path, fsync=False)
    spool.append(b"first")
    end = spool.append(b"second")
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    if damage == "partial header":
        segment.write_bytes(segment.read_bytes() + b"\x05\x00")
    elif damage == "partial payload":
        segment.write_bytes(segment.read_bytes() + HEADER.pack(10, 0) + b"abc")
    else:
        data = bytearray(segment.read_bytes())
        data[-1] ^= 0xFF
        segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path, fsync=False)
    kept = [p for _, p in reopened.read(0)]
    assert kept == ([b"first", b"second"] if damage != "bad checksum" else [b"first"])
    assert reopened.stats().truncated_bytes > 0
    reopened.append(b"third")
    assert [p for _, p in reopened.read(0)][-1] == b"third"
    if damage != "bad checksum":
        assert reopened.stats().end_offset == end + HEADER.size + len(b"third")


def test_ack_persists_and_deletes_spent_segments(tmp_path: Path) -> None:
    """Acknowledged records are not read again, survive a reopen as acknowledged,
    and segments wholly below the ack are deleted."""
    spool = Spool(tmp_path, segment_bytes=1024, budget_bytes=1 << 20, fsync=False)
    ends = [spool.append(p) for p in payloads(100)]
    before = len(list(tmp_path.glob("*.seg")))
    spool.ack(ends[69])
    assert len(list(tmp_path.glob("*.seg"))) < before
    assert spool.stats().records == 30
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=1024, budget_bytes=1 << 20, fsync=False)
    assert [p for _, p in reopened.read(reopened.acked_offset)] == payloads(100)[70:]
    assert reopened.stats().records == 30


def test_full_budget_refuses_and_writes_nothing(tmp_path: Path) -> None:
    """Past the budget, append raises SpoolFull with nothing written; an ack frees
    room and appends succeed again."""
    spool = Spool(tmp_path, segment_bytes=1024, budget_bytes=2048, fsync=False)
    ends = [spool.append(p) for p in payloads(40)]  # 40 x 48 bytes = 1920
    with pytest.raises(SpoolFull, match="budget of 2048 bytes is full"):
        spool.append(b"z" * 200)
    size = sum(f.stat().st_size for f in tmp_path.glob("*.seg"))
    assert size <= 2048
    with pytest.raises(SpoolFull):
        spool.append(b"y" * 200)
    assert sum(f.stat().st_size for f in tmp_path.glob("*.seg")) == size
    spool.ack(ends[-1])
    spool.append(b"after the ack")
    assert [p for _, p in spool.read(spool.acked_offset)] == [b"after the ack"]


def test_concurrent_appends_with_group_commit(tmp_path: Path) -> None:
    """Eight threads appending with fsync on: every record is there once, and
    fsyncs are shared (never more fsyncs than appends)."""
    spool = Spool(tmp_path, segment_bytes=8192, budget_bytes=1 << 22)
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    os.fsync = counting_fsync  # type: ignore[assignment]
    try:
        threads = [
            threading.Thread(
                target=lambda t=t: [spool.append(b"%d-%d" % (t, i)) for i in range(100)]
            )
            for t in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.fsync = real_fsync
    records = [p for _, p in spool.read(0)]
    assert sorted(records) == sorted(b"%d-%d" % (t, i) for t in range(8) for i in range(100))
    assert calls <= 800


WRITER = """
import sys
from pathlib import Path
from sidecar.escalation.spool import Spool
spool = Spool(Path(sys.argv[1]), segment_bytes=16384)
i = 0
while True:
    end = spool.append(b"record-%08d" % i)
    print(i, end, flush=True)
    i += 1
"""


def test_sigkill_mid_append_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """A writer killed with SIGKILL while appending: every record whose append had
    returned (and was printed) is in the reopened spool, exactly once, in order."""
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        acknowledged = [process.stdout.readline() for _ in range(300)]
        process.send_signal(signal.SIGKILL)
        rest, _ = process.communicate()
        acknowledged += rest.splitlines()
        spool = Spool(tmp_path, segment_bytes=16384)
        on_disk = [int(p.split(b"-")[1]) for _, p in spool.read(spool.acked_offset)]
        assert on_disk == list(range(len(on_disk)))  # in order, each once, no gap
        last = max(int(line.split()[0]) for line in acknowledged if line.strip())
        assert last < len(on_disk)  # every acknowledged record is there
        spool.ack(spool.stats().end_offset)  # the next round starts empty
        spool.close()


def test_zero_filled_tail_reads_as_no_record(tmp_path: Path) -> None:
    """Zeros after the last record (the padding a killed process leaves) are cut on
    open, not read as empty records, and not counted as a torn record."""
    spool = Spool(tmp_path, fsync=False)
    spool.append(b"only")
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes() + bytes(4096))
    reopened = Spool(tmp_path, fsync=False)
    assert [p for _, p in reopened.read(0)] == [b"only"]
    assert reopened.truncated_bytes == 0
    assert segment.stat().st_size == HEADER.size + len(b"only")


def test_records_are_written_over_zeros_laid_ahead(tmp_path: Path) -> None:
    """The open segment is kept longer than its records with zeros (so an fdatasync
    need not commit a new file size), within the segment; a crash that leaves them
    loses nothing, a close trims them, and a roll trims the closed segment."""
    spool = Spool(tmp_path, segment_bytes=PAD_BYTES * 4, budget_bytes=PAD_BYTES * 64, fsync=False)
    end = spool.append(b"first")
    segment = next(tmp_path.glob("*.seg"))
    assert segment.stat().st_size == end + PAD_BYTES
    last = [spool.append(p) for p in payloads(6000, size=200)][-1]
    assert len(list(tmp_path.glob("*.seg"))) > 1
    boundaries = {end for end, _ in spool.read(0)}
    for closed in sorted(tmp_path.glob("*.seg"))[:-1]:
        assert int(closed.stem) + closed.stat().st_size in boundaries
    newest = max(tmp_path.glob("*.seg"))
    assert int(newest.stem) + newest.stat().st_size > last  # zeros ahead
    os.close(spool._owner)  # let go of the directory as a killed process would
    reopened = Spool(tmp_path, segment_bytes=PAD_BYTES * 4, budget_bytes=PAD_BYTES * 64)
    assert reopened.truncated_bytes == 0
    assert reopened.stats().end_offset == last
    assert reopened.stats().records == 6001
    reopened.close()
    assert int(newest.stem) + newest.stat().st_size == last


FILE_LIMITED = """
import resource, signal, sys
from pathlib import Path
from sidecar.errors import EscalationRefused
from sidecar.escalation.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
spool = Spool(Path(sys.argv[1]), segment_bytes=1 << 20, fsync=False)
for i in range(10_000):
    try:
        spool.append(b"record-%08d" % i)
    except EscalationRefused as exc:
        print("refused", i, exc)
        break
    print("accepted", i)
spool.close()
"""


def test_no_room_for_the_zeros_still_takes_what_fits_then_refuses(tmp_path: Path) -> None:
    """A file that cannot grow by the zeros laid ahead (here a file-size limit, as a
    nearly full disk would) still takes each record that fits, then refuses the
    first that does not; every accepted record reads back, none after the refusal."""
    limit = PAD_BYTES // 4
    done = subprocess.run(
        [sys.executable, "-c", FILE_LIMITED, str(tmp_path), str(limit)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    accepted = [int(line.split()[1]) for line in lines if line.startswith("accepted")]
    assert lines[-1].startswith(f"refused {len(accepted)} ")
    assert "spool write failed" in lines[-1]
    record = HEADER.size + len(b"record-00000000")
    assert len(accepted) == limit // record  # every record that fits below the limit
    reopened = Spool(tmp_path, segment_bytes=1 << 20, fsync=False)
    assert [p for _, p in reopened.read(0)] == [b"record-%08d" % i for i in accepted]
    assert reopened.truncated_bytes == 0


def test_a_failed_fsync_refuses_everything_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fsync the kernel may have dropped the pages it could not write,
    so no later fsync may report them durable (a retried Route would act on them):
    the spool refuses every sync and write until it is reopened. (fdatasync is made
    to fail; this machine cannot produce a disk error on demand.)"""
    spool = Spool(tmp_path)
    ticket = spool.write(b"first")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(EscalationRefused, match="fsync failed: Input/output error"):
        spool.sync()
    monkeypatch.undo()
    with pytest.raises(EscalationRefused, match="unusable until restarted: an fsync failed"):
        spool.sync()
    with pytest.raises(EscalationRefused, match="unusable until restarted"):
        spool.write(b"second")
    assert spool.synced_offset < ticket
    spool.close()
    assert [p for _, p in Spool(tmp_path).read(0)] == [b"first"]


def test_a_second_owner_is_refused(tmp_path: Path) -> None:
    """Two processes appending to one spool would interleave records: the second
    opener gets SpoolBusy until the first closes."""
    first = Spool(tmp_path, fsync=False)
    with pytest.raises(SpoolBusy, match="in use"):
        Spool(tmp_path, fsync=False)
    first.close()
    Spool(tmp_path, fsync=False).close()


def test_reads_stop_at_what_an_fsync_covered(tmp_path: Path) -> None:
    """write() reaches the kernel without a sync; synced_offset only moves with
    sync(), and a reader bounded by it sees only synced records."""
    spool = Spool(tmp_path, fsync=True)
    first = spool.write(b"first")
    assert spool.synced_offset == 0
    assert spool.sync() == first
    spool.write(b"second")
    assert [p for _, p in spool.read(0, until=spool.synced_offset)] == [b"first"]
    spool.sync()
    assert [p for _, p in spool.read(0, until=spool.synced_offset)] == [b"first", b"second"]


def rolling_during_the_first_fsync(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """fdatasync rolls the spool to a new segment while it runs, the first time;
    returns the descriptors it synced."""
    real_fdatasync = os.fdatasync
    synced: list[int] = []

    def rolling_meanwhile(fd: int) -> None:
        if not synced:
            spool.write(b"x" * 4000)  # the segment is full: a roll
        real_fdatasync(fd)  # EBADF had the roll closed it
        synced.append(fd)

    monkeypatch.setattr(os, "fdatasync", rolling_meanwhile)
    return synced


def test_a_roll_during_an_fsync_leaves_its_descriptor_open_until_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder's thread syncs the segment's descriptor while Route may roll to
    a new segment: the rolled one stays open for the running fsync, the next sync
    closes it, and close leaves no descriptor behind."""
    before = set(os.listdir("/proc/self/fd"))
    spool = Spool(tmp_path, segment_bytes=4096)
    synced = rolling_during_the_first_fsync(spool, monkeypatch)
    spool.write(b"first" * 100)
    spool.sync()
    rolled = synced[0]
    os.fstat(rolled)  # still open: the next sync closes it
    spool.write(b"second")
    spool.sync()
    assert synced[1] != rolled
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(rolled)
    spool.close()
    assert set(os.listdir("/proc/self/fd")) <= before
    assert [p for _, p in Spool(tmp_path).read(0)] == [b"first" * 100, b"x" * 4000, b"second"]


def test_close_closes_a_rolled_descriptor_no_sync_has_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = set(os.listdir("/proc/self/fd"))
    spool = Spool(tmp_path, segment_bytes=4096)
    rolling_during_the_first_fsync(spool, monkeypatch)
    spool.write(b"first" * 100)
    spool.sync()
    spool.close()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_close_waits_for_a_running_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close during an fsync waits for it, so the fsync never finds its descriptor
    closed (EBADF would mark the spool broken) or reused by another file."""
    spool = Spool(tmp_path)
    real_fdatasync = os.fdatasync
    started, release = threading.Event(), threading.Event()

    def slow(fd: int) -> None:
        started.set()
        release.wait(5)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    ticket = spool.write(b"record")
    syncing = threading.Thread(target=spool.sync)
    syncing.start()
    started.wait(5)
    closing = threading.Thread(target=spool.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # waiting for the fsync
    release.set()
    syncing.join(5)
    closing.join(5)
    assert spool.synced_offset == ticket


def test_write_many_writes_together_or_not_at_all(tmp_path: Path) -> None:
    """Records that fit go in one write and read back in order; records that would
    pass the budget or the segment are refused whole, nothing written."""
    spool = Spool(tmp_path, segment_bytes=1024, budget_bytes=2048, fsync=False)
    end = spool.write_many(payloads(10))
    assert end == spool.synced_offset
    assert [p for _, p in spool.read(0)] == payloads(10)
    with pytest.raises(EscalationRefused, match="do not fit the current segment"):
        spool.write_many(payloads(20))  # 480 + 960 bytes: past the 1024-byte segment
    with pytest.raises(SpoolFull, match="cannot take 50 more records"):
        spool.write_many(payloads(50))
    assert [p for _, p in spool.read(0)] == payloads(10)
    with pytest.raises(EscalationRefused, match="1 to"):
        spool.write_many([b"ok", b""])
