"""The audit log: every record reaches the file, whatever the operational log level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from sidecar.telemetry.audit import JsonLinesAudit
from sidecar.telemetry.logs import configure_logging


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    configure_logging("error")
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("quiet_logs")
def test_records_written_whatever_the_log_level(tmp_path: Path) -> None:
    """With operational logs at error, audit records are still written in full."""
    audit = JsonLinesAudit(str(tmp_path / "audit.jsonl"))
    audit.write(
        {
            "event": "route.decision",
            "request_id": "r1",
            "logits": np.array([0.5, -1.25], dtype=np.float32),
        }
    )
    audit.close()
    (line,) = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(line) == {
        "event": "route.decision",
        "request_id": "r1",
        "logits": [0.5, -1.25],
    }


def test_flush_makes_records_visible(tmp_path: Path) -> None:
    """Records are buffered until flush, then on disk."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    audit.write({"event": "route.decision", "request_id": "r2"})
    audit.flush()
    assert json.loads(path.read_text())["request_id"] == "r2"
    audit.close()


def test_a_new_audit_file_is_not_world_readable(tmp_path: Path) -> None:
    """It holds logits, attributes and context: owner and group only (0640)."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    audit.write({"event": "route.decision", "request_id": "r3"})
    audit.flush()
    audit.close()
    assert path.stat().st_mode & 0o777 == 0o640


def test_flushing_from_another_thread_loses_and_splits_nothing(tmp_path: Path) -> None:
    """The sidecar writes on its event loop and flushes from a worker thread: every
    record arrives once, whole, in the order written."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    done = threading.Event()

    def flush_until_done() -> None:
        while not done.is_set():
            audit.flush()

    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    for i in range(20_000):
        audit.write({"event": "route.decision", "request_id": f"r{i}"})
    done.set()
    flusher.join()
    audit.close()
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(20_000)]


# Run in a child process: a file size limit (RLIMIT_FSIZE) applies to every file the
# process writes, pytest's own capture files included. The child writes records of
# equal size to the audit file (or to its stdout, redirected to that file) under a
# limit that cuts one short, keeps writing while the file refuses, then lifts the
# limit; it reports the log events and counters as JSON on stderr.
_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from structlog.testing import capture_logs
from sidecar.telemetry.audit import JsonLinesAudit

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write raises EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
record = lambda i: {"event": "route.decision", "request_id": f"r{i:04d}"}
"""
_REFUSING_FILE = (
    _CHILD
    + """
path, limit, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
audit = JsonLinesAudit(path, max_pending_bytes=bound)
with capture_logs() as logs:
    for i in range(3):
        audit.write(record(i))
    audit.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    for i in range(3, 40):
        audit.write(record(i))
        if i % 5 == 0:
            audit.flush()
    audit.flush()
    held = audit.pending_bytes()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    audit.flush()
    audit.close()
print(json.dumps({"events": [e["event"] for e in logs], "failures": audit.failures,
                  "dropped": audit.dropped, "held": held}), file=sys.stderr)
"""
)

RECORD_BYTES = len(b'{"event":"route.decision","request_id":"r0000"}\n')
CUT_SHORT = 3 * RECORD_BYTES + RECORD_BYTES // 2  # three records and half of the fourth


def refusing_file(path: Path, to_stdout: bool, bound: int) -> tuple[list[str], dict[str, Any]]:
    """The request ids in the file, and the child's report."""
    with path.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", _REFUSING_FILE, "-" if to_stdout else str(path),
             str(CUT_SHORT), str(bound)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    report: dict[str, Any] = json.loads(done.stderr.splitlines()[-1])
    return ids, report


@pytest.mark.parametrize("to_stdout", [False, True], ids=["file", "stdout"])
def test_a_refused_write_loses_nothing(tmp_path: Path, to_stdout: bool) -> None:
    """The file takes three records, then half of a fourth and no more (a full
    disk): every record is held and written once the file takes them again, whole,
    once each and in order; the failure is logged when it starts and when it ends.
    On stdout as well (without PYTHONUNBUFFERED, where Python would buffer it)."""
    ids, outcome = refusing_file(tmp_path / "audit.jsonl", to_stdout, 1 << 20)
    assert ids == [f"r{i:04d}" for i in range(40)]
    assert outcome["dropped"] == 0
    assert outcome["failures"] == 8  # the flushes at records 5, 10, ..., 35 and after 39
    assert outcome["events"] == ["audit.write_failed", "audit.write_recovered"]
    assert outcome["held"] == 37 * RECORD_BYTES - RECORD_BYTES // 2


def test_records_held_past_the_bound_are_dropped_oldest_first_and_counted(
    tmp_path: Path,
) -> None:
    """Held records are bounded: past the bound the oldest whole records go, as few
    as keep it, never the end of the one the file holds the start of, and the count
    says how many."""
    bound = 10 * RECORD_BYTES
    ids, outcome = refusing_file(tmp_path / "audit.jsonl", False, bound)
    assert outcome["dropped"] == 40 - len(ids) > 0
    assert ids[:4] == ["r0000", "r0001", "r0002", "r0003"]  # the fourth was cut short
    assert ids[4:] == [f"r{i:04d}" for i in range(40 - len(ids) + 4, 40)]  # the newest
    # The end of the fourth record and as many whole records as fit in the bound.
    remainder = RECORD_BYTES - RECORD_BYTES // 2
    assert outcome["held"] == remainder + (bound - remainder) // RECORD_BYTES * RECORD_BYTES
    assert outcome["events"].count("audit.records_dropped") >= 1
    assert outcome["events"][0] == "audit.write_failed"
    assert outcome["events"][-1] == "audit.write_recovered"


def test_audit_and_logs_on_a_stdout_that_refuses_writes() -> None:
    """The audit on stdout with the operational logs, stdout on a full disk: flush
    and close go on (the log of the failure cannot be written either) and the
    counters say what happened."""
    script = """
import json, sys
from sidecar.telemetry.audit import JsonLinesAudit
from sidecar.telemetry.logs import configure_logging
configure_logging("info")
audit = JsonLinesAudit("-")
for i in range(50):
    audit.write({"event": "route.decision", "request_id": f"r{i}"})
    audit.flush()
audit.close()
print(json.dumps({"failures": audit.failures}), file=sys.stderr)
"""
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-c", script],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.splitlines()[-1]) == {"failures": 51}  # and at close


def test_audit_on_stdout_and_logs_never_interleave() -> None:
    """The audit on stdout (HITL_AUDIT_LOG=-, as in Kubernetes) with the operational
    logs, a thread logging while the audit flushes chunks into a pipe read slowly:
    every line comes out whole, each record and log line once."""
    script = """
import threading
import structlog
from structlog.testing import capture_logs
from sidecar.telemetry.audit import JsonLinesAudit
from sidecar.telemetry.logs import configure_logging
configure_logging("info")
log = structlog.get_logger("test")
audit = JsonLinesAudit("-")
def logs():
    for i in range(3000):
        log.info("policy.loaded", n=i, pad="y" * 100)
thread = threading.Thread(target=logs)
thread.start()
for b in range(60):
    for i in range(300):
        audit.write({"event": "route.decision", "request_id": f"b{b}-{i}", "pad": "x" * 300})
    audit.flush()
thread.join()
audit.close()
"""
    output = bytearray()
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # as the image runs it
    ) as child:
        assert child.stdout is not None
        while chunk := child.stdout.read(4096):  # slower than the child writes: the pipe fills
            output += chunk
            time.sleep(0.0002)
    assert child.returncode == 0
    events = [json.loads(line)["event"] for line in output.splitlines()]  # each line whole
    assert events.count("route.decision") == 60 * 300
    assert events.count("policy.loaded") == 3000


def request_ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def test_a_file_moved_by_rotation_is_followed(tmp_path: Path) -> None:
    """logrotate's default: the file is renamed and the writer must open a new
    one. The next flush writes to a new file at the path, and says so."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    audit.write({"event": "route.decision", "request_id": "before"})
    audit.flush()
    path.rename(tmp_path / "audit.jsonl.1")
    audit.write({"event": "route.decision", "request_id": "after"})
    with capture_logs() as logs:
        audit.flush()
        audit.flush()
    audit.close()
    assert request_ids(tmp_path / "audit.jsonl.1") == ["before"]
    assert request_ids(path) == ["after"]
    assert [e["event"] for e in logs] == ["audit.reopened"]


def test_a_removed_file_and_its_directory_are_made_again(tmp_path: Path) -> None:
    """The file and its directory were removed: both are made again at the next flush."""
    path = tmp_path / "state" / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    audit.write({"event": "route.decision", "request_id": "gone"})
    audit.flush()
    path.unlink()
    path.parent.rmdir()
    audit.write({"event": "route.decision", "request_id": "kept"})
    audit.close()
    assert request_ids(path) == ["kept"]


def test_records_are_held_while_the_path_cannot_be_opened_again(tmp_path: Path) -> None:
    """The file is removed and a file stands where its directory was: the records
    are held, as for a full disk, and written once the path can be opened."""
    path = tmp_path / "state" / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    path.unlink()
    path.parent.rmdir()
    path.parent.write_text("in the way")
    with capture_logs() as logs:
        for i in range(3):
            audit.write({"event": "route.decision", "request_id": f"r{i}"})
            audit.flush()
        held = audit.pending_bytes()
        path.parent.unlink()
        audit.flush()
    audit.close()
    assert held > 0
    assert audit.failures == 3
    assert request_ids(path) == ["r0", "r1", "r2"]
    assert [e["event"] for e in logs] == [
        "audit.write_failed",
        "audit.reopened",
        "audit.write_recovered",
    ]


def test_a_copied_and_truncated_file_is_written_from_its_start(tmp_path: Path) -> None:
    """logrotate's copytruncate: the file is appended to, so the next record lands
    at the new end, with no gap of zeros where the old records were."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(str(path))
    audit.write({"event": "route.decision", "request_id": "copied"})
    audit.flush()
    (tmp_path / "audit.jsonl.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    audit.write({"event": "route.decision", "request_id": "after"})
    audit.close()
    assert path.read_bytes() == b'{"event":"route.decision","request_id":"after"}\n'
    assert request_ids(tmp_path / "audit.jsonl.1") == ["copied"]


_ROTATED_MID_RECORD = (
    _CHILD
    + """
path, limit, lift = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "lift"
audit = JsonLinesAudit(str(path))
for i in range(3):
    audit.write(record(i))
audit.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
for i in range(3, 6):
    audit.write(record(i))
audit.flush()  # the file takes half of r0003
path.rename(path.with_name(path.name + ".1"))
if lift:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
audit.flush()  # follows the rotation
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
for i in range(6, 10):
    audit.write(record(i))
audit.close()
print(json.dumps({"dropped": audit.dropped}), file=sys.stderr)
"""
)


def rotated_mid_record(tmp_path: Path, lift: bool) -> tuple[str, list[str], int]:
    """The rotated file's text, the request ids in the new one, and the count of
    records dropped."""
    path = tmp_path / "audit.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _ROTATED_MID_RECORD, str(path), str(CUT_SHORT),
         "lift" if lift else "keep"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    rotated = (tmp_path / "audit.jsonl.1").read_text()
    return rotated, request_ids(path), json.loads(done.stderr.splitlines()[-1])["dropped"]


def test_a_record_cut_short_ends_in_the_file_it_began_in(tmp_path: Path) -> None:
    """The file is rotated while it holds the start of a record whose end the disk
    refused, and the disk takes it now: the record is finished there, and every
    later one goes to the new file. No line is split between two files."""
    rotated, moved, dropped = rotated_mid_record(tmp_path, lift=True)
    assert [json.loads(line)["request_id"] for line in rotated.splitlines()] == [
        f"r{i:04d}" for i in range(4)
    ]
    assert moved == [f"r{i:04d}" for i in range(4, 10)]
    assert dropped == 0


def test_a_record_the_rotated_file_cannot_finish_is_dropped_and_counted(
    tmp_path: Path,
) -> None:
    """The old file still refuses the record's end: the record is dropped and
    counted, and the records held behind it go to the new file, not wait forever."""
    rotated, moved, dropped = rotated_mid_record(tmp_path, lift=False)
    whole, torn = rotated[: rotated.rindex("\n") + 1], rotated[rotated.rindex("\n") + 1 :]
    assert [json.loads(line)["request_id"] for line in whole.splitlines()] == [
        "r0000",
        "r0001",
        "r0002",
    ]
    assert torn == '{"event":"route.decision","request_id":"r0003"}'[: RECORD_BYTES // 2]
    assert moved == [f"r{i:04d}" for i in range(4, 10)]
    assert dropped == 1
