"""A lead's revert reaches the feedback service, with real processes: a sidecar
escalates, a reviewer resolves, the queue sends the label; the lead reverts it and the
queue retracts it; a new resolution is sent as the label that stands. The dataset
compiled from the log and the decisions the monitor reads carry the new class; an
item reverted and not resolved again carries no label."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from monitor.recorded import observations
from sidecar.feedback.store import open_store
from sidecar.review.item import Verdict
from tests.feedback_service import FeedbackProcess
from tests.integration.conftest import hitl_command, review_sink, start_review, wait_for
from tests.integration.test_feedback_loop import feedback, history, request, start_with_feedback

pytestmark = pytest.mark.integration

__all__ = ["feedback"]  # the fixture, shared with the feedback loop's tests


def test_a_revert_retracts_the_label_and_a_new_resolution_replaces_it(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    """Resolve, revert, resolve again with another class: the new class is the label;
    resolve and revert only: no label; the log keeps every event for audit."""
    (tmp_path / "queue.token").write_text(feedback.tokens["queue"])
    queue = start_review(
        tmp_path / "review",
        "--feedback", feedback.address,
        "--feedback-token-file", str(tmp_path / "queue.token"),
    )  # fmt: skip
    port = int(queue.address.rpartition(":")[2])
    sidecar = start_with_feedback(
        tmp_path, policy_file, feedback, *review_sink(tmp_path / "review", port)
    )
    try:
        with sidecar.client() as client:
            ids = {r: client.route(request(r, confident=False)).escalation_id for r in ("re", "un")}
        with queue.client("viewer") as viewer:
            wait_for(lambda: len(viewer.list_items()) == 2, 10.0, "both escalations in the queue")
        with queue.client("alice") as alice:
            for _ in ids:
                item = alice.claim()
                alice.resolve(item.escalation_id, Verdict.OVERRIDE, corrected_class=0)
        for request_id in ids:
            wait_for(lambda r=request_id: len(history(feedback, r).events) == 1, 10.0, "a review")
        with queue.client("lead") as lead:
            for escalation_id in ids.values():
                lead.revert(escalation_id, "labelled against the old guideline")
        for request_id in ids:
            wait_for(
                lambda r=request_id: len(history(feedback, r).events) == 2, 10.0, "a retraction"
            )
        with queue.client("bob") as bob:
            item = bob.claim()
            while item.escalation_id != ids["re"]:  # leave "un" reverted, unresolved
                bob.release(item.escalation_id)
                item = bob.claim()
            bob.resolve(item.escalation_id, Verdict.OVERRIDE, corrected_class=2)
        wait_for(lambda: len(history(feedback, "re").events) == 3, 10.0, "the new review")
    finally:
        for process in (sidecar.process, queue.process):
            process.kill()
            process.wait()

    first, retraction, second = (e.event for e in history(feedback, "re").events)
    escalation_id = ids["re"]
    assert (first.feedback_id, first.label.class_index) == (f"review-{escalation_id}", 0)
    assert retraction.type == fpb.FEEDBACK_RETRACTION
    assert retraction.feedback_id == f"review-{escalation_id}-retracted"
    assert retraction.retracts == first.feedback_id
    assert retraction.user_context["reverted_by"] == "lead"
    assert retraction.user_context["reason"] == "labelled against the old guideline"
    assert (second.feedback_id, second.label.class_index) == (f"review-{escalation_id}-2", 2)
    assert second.user_context["supersedes"] == first.feedback_id
    assert second.user_context["reviewer"] == "bob"
    assert [e.event.type for e in history(feedback, "un").events] == [
        fpb.FEEDBACK_REVIEW,
        fpb.FEEDBACK_RETRACTION,
    ]

    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    until = time.time() + 1.0
    built = subprocess.run(
        hitl_command("feedback", "dataset", "build", "--model", "m", "--until", str(until),
                     "--out", str(tmp_path / "datasets"), "--db", db),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    manifest = json.loads(built.stdout)
    rows = [
        json.loads(line)
        for line in (tmp_path / "datasets" / f"{manifest['id']}.jsonl").read_text().splitlines()
    ]
    assert [(row["request_id"], row["label"], row["label_source"]) for row in rows] == [
        ("re", 2, "review")
    ]
    store = open_store(db)
    try:
        recorded = {o.request_id: o.label for o in observations(store, "m", 0.0, until)}
    finally:
        store.close()
    assert recorded == {"re": 2, "un": None}
