"""A revert reaches the feedback service through the queue's outbox: the reverted
label is retracted (when the service had it), and the item's next resolution is sent
under its own feedback_id naming the one it supersedes; a revert while the label was
on its way is retracted too. On SQLite and PostgreSQL, against a real gRPC server in
this process that records what it is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.clock import FakeClock
from sidecar.review.item import ItemState, Verdict
from sidecar.review.outbox import FeedbackOutbox
from sidecar.review.queue import ReviewQueue
from sidecar.review.resolution import ReviewerVerdict
from sidecar.settings import ClientCredentials
from tests.unit.review.test_outbox import Recording, resolved, service

__all__ = ["service"]  # the fixture, shared with the outbox's tests

LEAD = Principal("lee", frozenset({"lead"}))


@pytest.fixture
def outbox(service: tuple[Recording, str], queue: ReviewQueue) -> Iterator[FeedbackOutbox]:
    sender = FeedbackOutbox(queue.store, FakeClock(), service[1], ClientCredentials("t0ken"))
    yield sender
    sender.close()


def again(queue: ReviewQueue, escalation_id: str, corrected: int) -> None:
    item = queue.claim("bob", "", 0.0)
    assert item.escalation_id == escalation_id
    queue.resolve(ReviewerVerdict(escalation_id, "bob", Verdict.OVERRIDE, corrected))


def sent(recording: Recording) -> list[tuple[str, str, str]]:
    """(feedback_id, type, what it retracts or supersedes) of each event sent, in order."""
    return [
        (
            e.feedback_id,
            fpb.FeedbackType.Name(e.type),
            e.retracts or e.user_context.get("supersedes", ""),
        )
        for e in recording.events
    ]


def test_a_sent_label_is_retracted_and_each_new_resolution_has_its_own_id(
    queue: ReviewQueue, service: tuple[Recording, str], outbox: FeedbackOutbox
) -> None:
    """Resolve, send, revert, resolve, send, revert, send: each resolution and each
    retraction once, retractions before the resolution that follows them."""
    recording, _ = service
    resolved(queue, "e1")
    assert outbox.send() == 1
    queue.revert(LEAD, "e1", "wrong class")
    again(queue, "e1", 0)
    assert outbox.send() == 2
    queue.revert(LEAD, "e1", "wrong again")
    assert outbox.send() == 1
    assert outbox.send() == 0
    assert sent(recording) == [
        ("review-e1", "FEEDBACK_REVIEW", ""),
        ("review-e1-retracted", "FEEDBACK_RETRACTION", "review-e1"),
        ("review-e1-2", "FEEDBACK_REVIEW", "review-e1"),
        ("review-e1-2-retracted", "FEEDBACK_RETRACTION", "review-e1-2"),
    ]
    last = recording.events[-1]
    assert (last.request_id, last.user_context["reverted_by"]) == ("req-e1", "lee")
    assert last.user_context["reason"] == "wrong again"
    assert [(r.number, r.retracted_at > 0) for r in queue.reverts("e1")] == [(1, True), (2, True)]


def test_a_label_never_sent_is_not_retracted(
    queue: ReviewQueue, service: tuple[Recording, str], outbox: FeedbackOutbox
) -> None:
    """Reverted before the outbox ran: nothing to retract; the next resolution is the
    item's second all the same."""
    recording, _ = service
    resolved(queue, "e1")
    queue.revert(LEAD, "e1", "too quick")
    assert outbox.send() == 0
    again(queue, "e1", 0)
    assert outbox.send() == 1
    assert sent(recording) == [("review-e1-2", "FEEDBACK_REVIEW", "review-e1")]
    (kept,) = queue.reverts("e1")
    assert (kept.forwarded_at, kept.retracted_at) == (0.0, 0.0)


def test_a_revert_while_the_label_is_on_its_way_is_retracted(
    queue: ReviewQueue, service: tuple[Recording, str], outbox: FeedbackOutbox
) -> None:
    """The outbox read the resolution, the lead reverted it, then the service answered:
    the mark lands on the reverted copy (the open item is left unsent), which is then
    retracted."""
    recording, _ = service
    resolved(queue, "e1")
    ((item, number),) = queue.store.unforwarded_numbered(10, 0.0)
    queue.revert(LEAD, "e1", "raced")
    queue.store.mark_forwarded([(item, number)], 5.0)
    (kept,) = queue.reverts("e1")
    assert kept.forwarded_at == 5.0
    assert queue.get("e1").state is ItemState.OPEN
    assert outbox.send() == 1
    assert sent(recording) == [("review-e1-retracted", "FEEDBACK_RETRACTION", "review-e1")]
    again(queue, "e1", 0)
    assert outbox.send() == 1
    assert sent(recording)[-1] == ("review-e1-2", "FEEDBACK_REVIEW", "review-e1")
