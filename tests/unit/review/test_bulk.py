"""A lead's bulk accept and the revert of one resolution, on the real SQL store."""

from __future__ import annotations

import json

import pytest

from sidecar.auth import Principal
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.review.bulk import BulkFilter
from sidecar.review.consensus import ConsensusPolicy, Requirement
from sidecar.review.item import Agreement, ItemState, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.resolution import ReviewerVerdict
from tests.escalations import escalation

LEAD = Principal("lee", frozenset({"lead"}))
REVIEWER = Principal("alice", frozenset({"reviewer"}))


def seed(queue: ReviewQueue) -> None:
    queue.submit(
        [
            escalation("high", calibrated_confidence=0.95, rule_id="r1"),
            escalation("edge", calibrated_confidence=0.9, rule_id="r1"),
            escalation("low", calibrated_confidence=0.5, rule_id="r1"),
            escalation("other-rule", calibrated_confidence=0.99, rule_id="r2"),
            escalation("other-model", model="n", calibrated_confidence=0.99, rule_id="r1"),
            escalation("claimed", calibrated_confidence=0.99, rule_id="r1"),
        ]
    )


def test_bulk_accept_takes_matching_open_items_at_or_above_the_confidence(
    queue: ReviewQueue,
) -> None:
    """Only open items of the model and rule at or above min_confidence are accepted."""
    seed(queue)
    while queue.claim("bob").escalation_id != "claimed":
        pass
    for item in queue.list_items(ItemState.CLAIMED):
        if item.escalation_id != "claimed":
            queue.release(item.escalation_id, "bob")
    batch = queue.bulk_accept(LEAD, BulkFilter("m", 0.9, rule_id="r1"))
    assert sorted(i.escalation_id for i in batch.items) == ["edge", "high"]
    assert queue.get("claimed").state is ItemState.CLAIMED
    assert queue.get("low").resolution is None


def test_each_resolution_carries_the_batch_id(queue: ReviewQueue) -> None:
    """Every bulk resolution is the lead's ACCEPT naming its batch."""
    seed(queue)
    batch = queue.bulk_accept(LEAD, BulkFilter("m", 0.9))
    assert len(batch.items) == 4
    for item in batch.items:
        r = queue.get(item.escalation_id).resolution
        assert r is not None
        assert (r.reviewer, r.verdict) == ("lee", Verdict.ACCEPT)
        assert r.rationale.startswith(f"bulk accept {batch.batch_id}: ")
        assert json.loads(r.evidence)["bulk_accept"]["batch_id"] == batch.batch_id


def test_bulk_accept_respects_its_limit(queue: ReviewQueue) -> None:
    """No more items than the limit are accepted."""
    seed(queue)
    assert len(queue.bulk_accept(LEAD, BulkFilter("m", 0.0, limit=2)).items) == 2
    with pytest.raises(InvalidRequest, match="limit"):
        queue.bulk_accept(LEAD, BulkFilter("m", 0.0, limit=1001))


def test_bulk_accept_leaves_consensus_and_adjudication_items(store: object, clock: object) -> None:
    """Items needing several reviews (and so those in adjudication) are not taken."""
    policy = ConsensusPolicy(tiers={"HUMAN_ASSISTED": Requirement(2, Agreement.ALL)})
    queue = ReviewQueue(store, clock, consensus=policy)  # type: ignore[arg-type]
    queue.submit([escalation("c1", calibrated_confidence=0.99)])
    for reviewer, verdict in (("a", Verdict.ACCEPT), ("b", Verdict.OVERRIDE)):
        queue.claim(reviewer)
        queue.resolve(
            ReviewerVerdict("c1", reviewer, verdict, corrected_class=0 if reviewer == "b" else None)
        )
    assert queue.get("c1").state is ItemState.ADJUDICATION
    assert queue.bulk_accept(LEAD, BulkFilter("m", 0.0)).items == ()


def test_bulk_accept_is_refused_to_a_reviewer(queue: ReviewQueue) -> None:
    """Only a lead may bulk accept."""
    seed(queue)
    with pytest.raises(PermissionDenied):
        queue.bulk_accept(REVIEWER, BulkFilter("m", 0.0))
    assert not queue.list_items(ItemState.RESOLVED)


def test_dry_run_changes_nothing(queue: ReviewQueue) -> None:
    """A dry run lists what it would accept and resolves nothing."""
    seed(queue)
    batch = queue.bulk_accept(LEAD, BulkFilter("m", 0.9, rule_id="r1"), dry_run=True)
    assert batch.dry_run
    assert sorted(i.escalation_id for i in batch.items) == ["claimed", "edge", "high"]
    assert not queue.list_items(ItemState.RESOLVED)


def test_revert_reopens_one_item_and_keeps_its_history(queue: ReviewQueue) -> None:
    """The item is OPEN and unresolved again; the resolution is in its history."""
    seed(queue)
    queue.bulk_accept(LEAD, BulkFilter("m", 0.9, rule_id="r1"))
    item = queue.revert(LEAD, "high", "wrong batch")
    assert (item.state, item.resolution) == (ItemState.OPEN, None)
    assert queue.get("edge").resolution is not None
    (kept,) = queue.reverts("high")
    assert (kept.reverted_by, kept.reason, kept.resolution.reviewer) == (
        "lee",
        "wrong batch",
        "lee",
    )
    assert kept.resolution.rationale.startswith("bulk accept ")


def test_revert_is_refused_to_a_reviewer(queue: ReviewQueue) -> None:
    """Only a lead may revert."""
    seed(queue)
    queue.bulk_accept(LEAD, BulkFilter("m", 0.9))
    with pytest.raises(PermissionDenied):
        queue.revert(REVIEWER, "high", "no")
    assert queue.get("high").resolution is not None


def test_reverting_an_unresolved_item_names_the_field(queue: ReviewQueue) -> None:
    """An item with no resolution has nothing to revert: escalation_id is named."""
    seed(queue)
    with pytest.raises(InvalidRequest, match="escalation_id"):
        queue.revert(LEAD, "low", "why")
    with pytest.raises(InvalidRequest, match="reason"):
        queue.revert(LEAD, "low", " ")
