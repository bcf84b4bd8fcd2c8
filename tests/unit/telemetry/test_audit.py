"""The audit log: every record reaches the file, whatever the operational log level."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

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
# equal size under a limit that cuts one short, keeps writing while the file refuses,
# then lifts the limit; it reports the log events and counters as JSON.
_REFUSING_FILE = """
import json, resource, signal, sys
from structlog.testing import capture_logs
from sidecar.telemetry.audit import JsonLinesAudit

path, limit, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write raises EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
audit = JsonLinesAudit(path, max_pending_bytes=bound)
record = lambda i: {"event": "route.decision", "request_id": f"r{i:04d}"}
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
                  "dropped": audit.dropped, "held": held}))
"""


def refusing_file(path: Path, limit: int, bound: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _REFUSING_FILE, str(path), str(limit), str(bound)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


RECORD_BYTES = len(b'{"event":"route.decision","request_id":"r0000"}\n')


def test_a_refused_write_loses_nothing(tmp_path: Path) -> None:
    """The file takes three records, then half of a fourth and no more (a full
    disk): every record is held and written once the file takes them again, whole,
    once each and in order; the failure is logged when it starts and when it ends."""
    path = tmp_path / "audit.jsonl"
    outcome = refusing_file(path, 3 * RECORD_BYTES + RECORD_BYTES // 2, 1 << 20)
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == [f"r{i:04d}" for i in range(40)]
    assert outcome["dropped"] == 0
    assert outcome["failures"] == 8  # the flushes at records 5, 10, ..., 35 and after 39
    assert outcome["events"] == ["audit.write_failed", "audit.write_recovered"]
    assert outcome["held"] == 37 * RECORD_BYTES - RECORD_BYTES // 2


def test_records_held_past_the_bound_are_dropped_oldest_first_and_counted(
    tmp_path: Path,
) -> None:
    """Held records are bounded: past the bound the oldest whole records go, never
    the rest of the one the file holds the start of, and the count says how many."""
    path = tmp_path / "audit.jsonl"
    outcome = refusing_file(path, 3 * RECORD_BYTES + RECORD_BYTES // 2, 10 * RECORD_BYTES)
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert len(ids) == 40 - outcome["dropped"]
    assert outcome["dropped"] > 0
    assert ids[:4] == ["r0000", "r0001", "r0002", "r0003"]  # the fourth was cut short
    assert ids[4:] == [f"r{i:04d}" for i in range(40 - len(ids) + 4, 40)]  # the newest
    assert outcome["held"] <= 10 * RECORD_BYTES + RECORD_BYTES  # the bound, and the rest
    assert outcome["events"].count("audit.records_dropped") >= 1
    assert outcome["events"][0] == "audit.write_failed"
    assert outcome["events"][-1] == "audit.write_recovered"
