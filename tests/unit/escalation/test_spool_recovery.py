"""What a spool tells the process that opens it about the one before: the
undelivered records it left behind (hitl.spool.recovered_records)."""

from __future__ import annotations

from pathlib import Path

from sidecar.escalation.spool import Spool


def test_records_left_undelivered_are_counted_once_when_reopened(tmp_path: Path) -> None:
    """A fresh spool recovered nothing; reopened after 5 of 12 records were acknowledged,
    it recovered the 7 others, and that count stays what was found at opening."""
    spool = Spool(tmp_path, segment_bytes=4096, budget_bytes=1 << 20)
    assert spool.recovered_records == 0
    ends = [spool.append(f"escalation-{i}".encode()) for i in range(12)]
    spool.ack(ends[4], 5)
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=4096, budget_bytes=1 << 20)
    assert reopened.recovered_records == 7
    reopened.ack(ends[-1], 7)
    reopened.append(b"escalation-12")
    assert (reopened.recovered_records, reopened.stats().records) == (7, 1)
    reopened.close()
    assert Spool(tmp_path).recovered_records == 1
