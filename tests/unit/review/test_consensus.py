"""Consensus and adjudication, on SQLite and on PostgreSQL: an item needing N reviews
is resolved only when N different reviewers agree; disagreement goes to a lead; the
answers are hidden from reviewers and exported with the agreement."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from sidecar.auth import Principal
from sidecar.clock import FakeClock
from sidecar.errors import ConfigError
from sidecar.review import messages
from sidecar.review.access import sees_answers
from sidecar.review.consensus import parse_consensus
from sidecar.review.errors import ItemConflict, ItemNotFound
from sidecar.review.item import Agreement, ItemState, Verdict
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.outbox import review_event
from sidecar.review.queue import ReviewQueue
from sidecar.review.records import export_record, item_record
from sidecar.review.resolution import ReviewerVerdict
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from tests.escalations import escalation
from tests.unit.review.conftest import points

POLICY = "HUMAN_ASSISTED=2:all,rule:large-amount=3:majority"


@pytest.fixture
def queue(store: ReviewStore, clock: FakeClock, reader: InMemoryMetricReader) -> ReviewQueue:
    meters = MeterProvider(metric_readers=[reader])
    return ReviewQueue(
        store,
        clock,
        Sla(),
        ReviewMetrics(meters.get_meter("test")),
        consensus=parse_consensus(POLICY, "HITL_REVIEW_CONSENSUS"),
    )


def answer(queue: ReviewQueue, reviewer: str, label_class: int | None = None) -> None:
    """reviewer claims the next item and accepts it, or overrides it with label_class."""
    item = queue.claim(reviewer)
    verdict = Verdict.ACCEPT if label_class is None else Verdict.OVERRIDE
    queue.resolve(
        ReviewerVerdict(
            item.escalation_id, reviewer, verdict, label_class, rationale=f"{reviewer} says"
        )
    )


def test_the_policy_is_parsed_per_tier_and_rule() -> None:
    """A rule's requirement wins over its tier's; unnamed ones need one review."""
    policy = parse_consensus(POLICY, "V")
    assert policy.requirement("HUMAN_ASSISTED", "").reviews == 2
    large = policy.requirement("HUMAN_ASSISTED", "large-amount")
    assert (large.reviews, large.agreement) == (3, Agreement.MAJORITY)
    assert policy.requirement("HUMAN_PRIMARY", "other").reviews == 1
    for bad in ("HUMAN=2", "HUMAN_PRIMARY=0", "HUMAN_PRIMARY=2:some", "HUMAN_PRIMARY=2:majority"):
        with pytest.raises(ConfigError, match="V: "):
            parse_consensus(bad, "V")


def test_two_of_two_agreeing_resolve(queue: ReviewQueue, reader: InMemoryMetricReader) -> None:
    """The first answer reopens the item; the second, agreeing, resolves it "2 of 2"."""
    queue.submit([escalation("e1")])
    answer(queue, "alice")
    item = queue.get("e1")
    assert (item.state, item.answered, item.resolution) == (ItemState.OPEN, 1, None)
    answer(queue, "bob")
    item = queue.get("e1")
    assert item.state is ItemState.RESOLVED
    assert item.resolution is not None
    assert (item.resolution.label_class, item.resolution.agreement) == (1, "2 of 2")
    assert [a.reviewer for a in item.answers] == ["alice", "bob"]
    consensus = points(reader, "hitl.review.consensus")
    assert consensus == {frozenset({("outcome", "agreed"), ("tier", "HUMAN_ASSISTED")}): 1}


def test_disagreement_goes_to_a_lead(queue: ReviewQueue, reader: InMemoryMetricReader) -> None:
    """Two classes of two answers: ADJUDICATION, which a reviewer may neither claim nor
    resolve; a lead claims it and their verdict is final."""
    queue.submit([escalation("e1")])
    answer(queue, "alice")
    answer(queue, "bob", label_class=0)
    assert queue.get("e1").state is ItemState.ADJUDICATION
    assert [i.escalation_id for i in queue.list_items(ItemState.ADJUDICATION)] == ["e1"]
    assert queue.list_items(ItemState.OPEN) == []
    with pytest.raises(ItemNotFound):
        queue.claim("carol")
    with pytest.raises(ItemNotFound):  # a lead acting for a reviewer is not adjudicating
        queue.claim("carol", acted_by="lee", lead=True)
    held = queue.claim("lee", lead=True)
    assert held.escalation_id == "e1"
    with pytest.raises(ItemConflict, match="awaits adjudication"):
        queue.resolve(ReviewerVerdict("e1", "lee", Verdict.OVERRIDE, 0))
    queue.resolve(ReviewerVerdict("e1", "lee", Verdict.OVERRIDE, 0, lead=True))
    r = queue.get("e1").resolution
    assert r is not None
    assert (r.reviewer, r.label_class, r.agreement) == ("lee", 0, "adjudicated (1 of 2 agreed)")
    consensus = points(reader, "hitl.review.consensus")
    assert consensus[frozenset({("outcome", "adjudication"), ("tier", "HUMAN_ASSISTED")})] == 1
    assert consensus[frozenset({("outcome", "adjudicated"), ("tier", "HUMAN_ASSISTED")})] == 1


def test_a_majority_of_three_resolves(queue: ReviewQueue) -> None:
    """Under 3:majority, two of three on one class resolve it "2 of 3", with the class
    the two named, even when the last answer is the odd one out."""
    queue.submit([escalation("e1", rule_id="large-amount")])
    answer(queue, "alice", label_class=2)
    answer(queue, "bob", label_class=2)
    assert queue.get("e1").state is ItemState.OPEN
    answer(queue, "carol")
    r = queue.get("e1").resolution
    assert r is not None
    assert (r.reviewer, r.label_class, r.agreement) == ("bob", 2, "2 of 3")


def test_the_same_reviewer_cannot_count_twice(queue: ReviewQueue) -> None:
    """A reviewer who answered is not offered the item again, and may not answer it
    again even after claiming it (as a lead acting for them would)."""
    queue.submit([escalation("e1")])
    answer(queue, "alice")
    with pytest.raises(ItemNotFound):
        queue.claim("alice")
    # Reach the store directly, as a second replica racing the first might.
    assert queue.store.claim("alice", "", 300.0, queue.now()) is None
    item = queue.claim("bob")
    queue.release(item.escalation_id, "bob")
    store_item = queue.get("e1")
    assert store_item.answered == 1


def test_an_answer_twice_is_refused(queue: ReviewQueue, store: ReviewStore) -> None:
    """The store refuses a second answer by one reviewer, whoever holds the claim."""
    queue.submit([escalation("e1")])
    answer(queue, "alice")
    # alice holds it again through a claim recorded for her by hand (a stale lease).
    with store._transaction() as tx:  # type: ignore[attr-defined]
        tx.run(
            "UPDATE review_items SET state = 'CLAIMED', claimed_by = 'alice',"
            " lease_expires_at = 9000000000",
            {},
        )
    with pytest.raises(ItemConflict, match="already answered"):
        queue.resolve(ReviewerVerdict("e1", "alice", Verdict.ACCEPT))


def test_answers_are_hidden_from_reviewers(queue: ReviewQueue) -> None:
    """A reviewer's view carries how many answers are in, never what they are; a lead's
    and a viewer's carry them."""
    queue.submit([escalation("e1")])
    answer(queue, "alice", label_class=0)
    item = queue.claim("bob")
    reviewer = Principal("bob", frozenset({"reviewer"}))
    assert not sees_answers(reviewer)
    message = messages.item_message(item, sees_answers(reviewer))
    assert (message.answered, message.reviews_required, list(message.answers)) == (1, 2, [])
    assert "answers" not in item_record(item, queue.now())
    for role in ("lead", "viewer"):
        seen = messages.item_message(item, sees_answers(Principal("x", frozenset({role}))))
        assert [a.reviewer for a in seen.answers] == ["alice"]
        assert seen.answers[0].verdict == rpb.VERDICT_OVERRIDE


def test_export_carries_every_answer_and_the_agreement(queue: ReviewQueue) -> None:
    """The export line has the final label, each answer and the agreement; the
    feedback event has the final resolution with the agreement in its context."""
    queue.submit([escalation("e1", rule_id="large-amount")])
    for reviewer in ("alice", "bob", "carol"):
        answer(queue, reviewer, label_class=0 if reviewer == "bob" else None)
    (item,) = queue.export()
    record = export_record(item)
    assert (record["label"], record["agreement"], record["reviews_required"]) == (1, "2 of 3", 3)
    assert [(a["reviewer"], a["label_class"]) for a in record["answers"]] == [
        ("alice", 1),
        ("bob", 0),
        ("carol", 1),
    ]
    assert record["answers"][1]["rationale"] == "bob says"
    wire = messages.item_from_message(messages.item_message(item, True))
    assert wire.answers == item.answers
    assert wire.resolution == item.resolution
    event = review_event(item)
    assert event.user_context["agreement"] == "2 of 3"
    assert event.label.class_index == 1


def test_one_review_is_as_before(queue: ReviewQueue) -> None:
    """An item no policy names resolves on its first verdict, with no answers and no
    agreement recorded."""
    queue.submit([escalation("e1", tier="HUMAN_PRIMARY")])
    answer(queue, "alice")
    item = queue.get("e1")
    assert item.state is ItemState.RESOLVED
    assert (item.reviews_required, item.answered, item.answers) == (1, 0, ())
    assert item.resolution is not None
    assert item.resolution.agreement == ""
    assert "agreement" not in export_record(item)
