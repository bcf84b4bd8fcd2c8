"""The audit log: every record reaches the file, whatever the operational log level."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

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
