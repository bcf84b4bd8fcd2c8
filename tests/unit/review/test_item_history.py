"""An item's whole history: the store keeps each claim, release and raise (SQLite and
PostgreSQL), and the console's history puts them together with the answers, the
resolution and reverts, hiding other reviewers on a consensus item from a reviewer."""

from __future__ import annotations

import pytest

from sidecar.auth import Principal
from sidecar.clock import FakeClock
from sidecar.review.consensus import parse_consensus
from sidecar.review.console import view
from sidecar.review.history import EventKind, ItemEvent
from sidecar.review.item import ItemState, ReviewItem, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.resolution import ReviewerVerdict
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from tests.escalations import escalation

LEAD = Principal("lee", frozenset({"lead"}))
SLA = Sla()


@pytest.fixture
def queue(store: ReviewStore, clock: FakeClock) -> ReviewQueue:
    """Items of rule two-eyes need two reviews."""
    policy = parse_consensus("rule:two-eyes=2:all", "HITL_REVIEW_CONSENSUS")
    return ReviewQueue(store, clock, SLA, consensus=policy)


def verdict(
    escalation_id: str, reviewer: str, label: int | None = None, lead: bool = False
) -> ReviewerVerdict:
    chosen = Verdict.ACCEPT if label is None else Verdict.OVERRIDE
    return ReviewerVerdict(escalation_id, reviewer, chosen, label, rationale="why", lead=lead)


def test_the_store_keeps_every_claim_release_and_raise(
    queue: ReviewQueue, store: ReviewStore, clock: FakeClock
) -> None:
    """Claimed by alice, released, raised past its deadline, claimed by bob: four
    events, oldest first, with who and the level."""
    start = clock.now()
    queue.submit([escalation("e1", tier="HUMAN_PRIMARY")])
    queue.claim("alice", lease_seconds=60.0)
    clock.advance(10.0)
    queue.release("e1", "alice")
    clock.advance(SLA.seconds["HUMAN_PRIMARY"])
    queue.sweep()
    clock.advance(5.0)
    queue.claim("bob", lease_seconds=60.0)
    overdue = start + 10.0 + SLA.seconds["HUMAN_PRIMARY"]
    assert store.history("e1") == [
        ItemEvent(start, EventKind.CLAIMED, "alice", f"{start + 60.0:.3f}"),
        ItemEvent(start + 10.0, EventKind.RELEASED, "alice"),
        ItemEvent(overdue, EventKind.RAISED, "", "1"),
        ItemEvent(overdue + 5.0, EventKind.CLAIMED, "bob", f"{overdue + 65.0:.3f}"),
    ]
    assert store.history("no-such-item") == []


def test_the_history_shows_answers_resolution_and_reverts(
    queue: ReviewQueue, store: ReviewStore, clock: FakeClock
) -> None:
    """A consensus item: both claims and answers, the agreed resolution, its revert by
    a lead, and the lead's resolution after it, in order."""
    queue.submit([escalation("e1", reason="RULE", rule_id="two-eyes")])
    for reviewer in ("alice", "bob"):
        queue.claim(reviewer)
        clock.advance(10.0)
        queue.resolve(verdict("e1", reviewer))
        clock.advance(1.0)
    queue.revert(LEAD, "e1", "the customer disputed it")
    clock.advance(1.0)
    queue.claim("lee", lead=True)
    queue.resolve(verdict("e1", "lee", 0, lead=True))  # its answers are in: adjudication
    item = queue.get("e1")
    events = view.history(item, SLA, store.history("e1"), queue.reverts("e1"))
    what = [e.what for e in events]
    assert what[:2] == ["decided by the sidecar: HUMAN_ASSISTED, RULE", "received by the queue"]
    assert what[2:] == [
        "claimed by alice",
        "answered by alice: ACCEPT, class 1 b",
        "claimed by bob",
        "answered by bob: ACCEPT, class 1 b",
        "resolved by bob: ACCEPT, class 1 b [2 of 2]",
        "reverted by lee: the customer disputed it",
        "claimed by lee",
        "resolved by lee: OVERRIDE, class 0 [adjudicated (2 of 2 agreed)]",
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_a_reviewer_sees_only_their_own_part_of_a_consensus_item(
    queue: ReviewQueue, store: ReviewStore, clock: FakeClock
) -> None:
    """Before answering, bob's history names neither alice's claim nor her answer."""
    queue.submit([escalation("e1", reason="RULE", rule_id="two-eyes")])
    queue.claim("alice")
    clock.advance(10.0)
    queue.resolve(verdict("e1", "alice"))
    queue.claim("bob")
    item = queue.get("e1")
    for_bob = view.history(item, SLA, store.history("e1"), blind_for="bob")
    assert not any("alice" in e.what for e in for_bob)
    assert "claimed by bob" in [e.what for e in for_bob]
    for_lead = [e.what for e in view.history(item, SLA, store.history("e1"))]
    assert "answered by alice: ACCEPT, class 1 b" in for_lead


def test_an_item_from_before_the_events_shows_its_latest_claim_and_raise() -> None:
    """Without events, the row's latest claim and raise (dated by the SLA) stand in."""
    item = escalation("e1", created_at=100.0)
    held = ReviewItem(item, ItemState.CLAIMED, 1, 10_000.0, 2, 101.0, "alice", 9_000.0)
    events = view.history(held, SLA)
    assert [e.at for e in events] == [100.0, 101.0, 10_000.0 - 7200.0, 9_000.0]
    assert events[2].what == "raised to escalation level 2 (2 deadlines passed)"
    assert events[3].what == "claimed by alice"
