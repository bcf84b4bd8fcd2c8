"""The export line and the reviewer CLI's JSON, and an export the calibrators load as is."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibrators.data import load_dataset
from sidecar.clock import FakeClock
from sidecar.review.item import UNKNOWN_CLASS, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.records import export_record, item_record, unusable
from sidecar.review.resolution import ReviewerVerdict
from tests.escalations import escalation

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.5, 0.0], [0.9, -0.5, 0.25]]
PROBABILITIES = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1], [0.5, 0.25, 0.25]]


def resolve_all(queue: ReviewQueue, clock: FakeClock, rows: list[list[float]], kind: str) -> None:
    """Rows predicted as their argmax; the reviewer accepts even rows, overrides odd ones to 2
    (or 0 where 2 was predicted)."""
    queue.submit(
        [
            escalation(
                f"e{i}",
                logits=row,
                input_kind=kind,
                predicted_class=int(np.argmax(row)),
                predicted_label="abc"[int(np.argmax(row))],
                domain="eu" if i < 2 else "us",
            )
            for i, row in enumerate(rows)
        ]
    )
    for i, row in enumerate(rows):
        queue.claim("alice")
        clock.advance(1)
        if i % 2 == 0:
            queue.resolve(ReviewerVerdict(f"e{i}", "alice", Verdict.ACCEPT))
        else:
            corrected = 0 if int(np.argmax(row)) == 2 else 2
            queue.resolve(
                ReviewerVerdict(f"e{i}", "alice", Verdict.OVERRIDE, corrected_class=corrected)
            )


def write_export(queue: ReviewQueue, path: Path) -> Path:
    lines = [json.dumps(export_record(item), allow_nan=False) for item in queue.export()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("kind", "rows"), [("LOGITS", LOGITS), ("PROBABILITIES", PROBABILITIES)])
def test_export_loads_into_the_calibrators(
    queue: ReviewQueue, clock: FakeClock, tmp_path: Path, kind: str, rows: list[list[float]]
) -> None:
    """calibrators.data.load_dataset reads an export as it is: scores, true labels, domains."""
    resolve_all(queue, clock, rows, kind)
    dataset = load_dataset(write_export(queue, tmp_path / "labelled.jsonl"))
    scores = np.asarray(rows, dtype=np.float32).astype(np.float64)
    # Probabilities come back as log(p), the calibrators' logits.
    expected = scores if kind == "LOGITS" else np.log(scores)
    np.testing.assert_allclose(dataset.logits, expected, rtol=1e-6)
    assert dataset.labels.tolist() == [0, 0, 1, 2]  # e1 predicted 2 -> 0, e3 predicted 0 -> 2
    assert dataset.domains is not None
    assert dataset.domains.tolist() == ["eu", "eu", "us", "us"]


def test_export_line_joins_resolution_and_decision_context(
    queue: ReviewQueue, clock: FakeClock
) -> None:
    """Every escalation field, probabilities under their own key, and the resolution."""
    resolve_all(queue, clock, PROBABILITIES[:1], "PROBABILITIES")
    (item,) = queue.export()
    record = export_record(item)
    assert "logits" not in record
    assert record["probabilities"] == pytest.approx(PROBABILITIES[0])
    assert record["input_kind"] == "PROBABILITIES"
    assert {k: record[k] for k in ("label", "label_name", "verdict", "reviewer")} == {
        "label": 0,
        "label_name": "a",
        "verdict": "ACCEPT",
        "reviewer": "alice",
    }
    assert record["time_to_label_seconds"] == 1.0
    assert record["resolved_at"] == clock.now()
    assert record["escalation_level"] == 0
    context = {"domain", "trace_id", "request_id", "model", "tier", "reason", "context"}
    assert context <= record.keys()


def test_non_finite_numbers_are_written_null(queue: ReviewQueue, clock: FakeClock) -> None:
    """A fallback's NaN confidence becomes null, so every line is strict JSON."""
    queue.submit([escalation("e1", calibrated_confidence=math.nan, reason="FALLBACK_NON_FINITE")])
    queue.claim("alice")
    (item,) = queue.list_items()
    assert item_record(item, 0.0)["escalation"]["calibrated_confidence"] is None
    queue.resolve(ReviewerVerdict("e1", "alice", Verdict.ACCEPT))
    (resolved,) = queue.export()
    json.dumps(export_record(resolved), allow_nan=False)
    assert export_record(resolved)["calibrated_confidence"] is None


def test_items_without_a_class_index_are_not_calibration_examples(
    queue: ReviewQueue, clock: FakeClock
) -> None:
    """Labelled by name only, or without logits (what older versions let through):
    unusable says why; an open item refuses export."""
    queue.submit([escalation("done"), escalation("open")])
    queue.claim("alice")
    queue.resolve(ReviewerVerdict("done", "alice", Verdict.ACCEPT))
    (done,) = queue.export()
    assert done.resolution is not None
    assert unusable(done) == ""
    named = replace(done, resolution=replace(done.resolution, label_class=UNKNOWN_CLASS))
    assert unusable(named) == "labelled by name only (no class index)"
    empty = replace(done, escalation=replace(done.escalation, logits=[]))
    assert unusable(empty) == "no logits"
    (still_open,) = [i for i in queue.list_items() if i.escalation_id == "open"]
    assert unusable(still_open) == "unresolved"
    with pytest.raises(ValueError, match="not resolved"):
        export_record(still_open)


def test_a_reviewer_reads_times_and_logits_as_people_do(queue: ReviewQueue) -> None:
    """Deadlines as ISO 8601 with the time left; float32 logits without float noise."""
    queue.submit([escalation("e1", logits=[0.30000001192092896, 2.0, -1.0])])
    (item,) = queue.list_items()
    record = item_record(item, item.due_at - 90.0)
    assert record["time_left_seconds"] == 90.0
    assert record["due"].endswith("+00:00")
    assert record["escalation"]["logits"] == [0.3, 2.0, -1.0]
    assert record["lease_expires"] is None
