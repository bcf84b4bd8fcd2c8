"""``hitl review bulk-accept`` and ``hitl review revert`` against a real ``hitl review
serve``: a lead accepts a batch and reverts one item, which a reviewer resolves
again; a reviewer is refused both; bad arguments are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.escalations import escalation
from tests.integration.conftest import ReviewProcess
from tests.integration.test_review_process import escalations_file, ok, refused

pytestmark = pytest.mark.integration


def test_a_lead_bulk_accepts_and_reverts_from_the_command_line(
    review_queue: ReviewProcess, tmp_path: Path
) -> None:
    """A dry run lists, the accept resolves each item as the lead's, a revert reopens one
    with its reason kept; reviewers get PERMISSION_DENIED, bad values INVALID_ARGUMENT."""
    source = escalations_file(
        tmp_path / "escalations.jsonl",
        escalation("sure", calibrated_confidence=0.97).to_dict(),
        escalation("surer", calibrated_confidence=0.99, rule_id="r2").to_dict(),
        escalation("unsure", calibrated_confidence=0.5).to_dict(),
    )
    ok(review_queue.hitl("submit", str(source)))
    accept = ("bulk-accept", "--model", "m", "--min-confidence", "0.95")

    stderr = refused(review_queue.hitl(*accept, who="alice"))
    assert "hitl: PERMISSION_DENIED: alice (roles: reviewer) may not call BulkAccept" in stderr
    stderr = refused(review_queue.hitl("bulk-accept", "--model", "m", "--min-confidence", "2"))
    assert "INVALID_ARGUMENT: min_confidence: 2.0 is not in [0, 1]" in stderr

    dry = ok(review_queue.hitl(*accept, "--rule", "r2", "--dry-run", who="lead"))
    assert (dry["dry_run"], dry["escalation_ids"]) == (True, ["surer"])
    done = ok(review_queue.hitl(*accept, "--limit", "5", who="lead"))
    assert (done["dry_run"], done["accepted"], done["escalation_ids"]) == (
        False, 2, ["sure", "surer"],
    )  # fmt: skip
    assert done["batch_id"].startswith("bulk-")
    listed = review_queue.hitl("list", "--state", "resolved", who="lead")
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(item["escalation_id"] for item in items) == ["sure", "surer"]
    for item in items:
        assert item["resolution"]["reviewer"] == "lead"
        assert item["resolution"]["rationale"].startswith(f"bulk accept {done['batch_id']}: ")

    stderr = refused(review_queue.hitl("revert", "surer", "--reason", "too eager", who="alice"))
    assert "PERMISSION_DENIED: alice (roles: reviewer) may not call Revert" in stderr
    stderr = refused(review_queue.hitl("revert", "surer", "--reason", " ", who="lead"))
    assert "INVALID_ARGUMENT: reason: a revert needs a reason" in stderr
    reopened = ok(review_queue.hitl("revert", "surer", "--reason", "too eager", who="lead"))
    assert (reopened["state"], reopened["resolution"]) == ("OPEN", None)
    stderr = refused(review_queue.hitl("revert", "surer", "--reason", "again", who="lead"))
    assert "INVALID_ARGUMENT: escalation_id: 'surer' is not resolved" in stderr

    claimed = ok(review_queue.hitl("next", "--model", "m", who="bob"))
    assert claimed["escalation_id"] == "surer"
    again = ok(review_queue.hitl("resolve", "surer", "--override", "--class", "0", who="bob"))
    assert (again["state"], again["resolution"]["label_class"]) == ("RESOLVED", 0)
