"""Resolutions to the feedback service: the REVIEW event each becomes, and what is
marked sent (everything the service answered for; nothing while it is unreachable),
on SQLite and PostgreSQL. The service here is a real gRPC server in this process
that records what it is sent."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.clock import FakeClock
from sidecar.feedback.latency import REVIEW_TIMES
from sidecar.review.item import Verdict
from sidecar.review.outbox import FeedbackOutbox, review_event
from sidecar.review.queue import ReviewQueue
from sidecar.review.resolution import ReviewerVerdict
from sidecar.settings import ClientCredentials
from tests.escalations import escalation


class Recording(fpb_grpc.FeedbackServicer):
    """Accepts every event but those whose feedback_id is in refuse."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.events: list[fpb.FeedbackEvent] = []
        self.tokens: list[str] = []
        self.refuse = refuse

    def RecordBatch(self, request: fpb.RecordBatchRequest, context: Any) -> fpb.RecordBatchResponse:
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        self.events.extend(request.events)
        return fpb.RecordBatchResponse(
            results=[
                fpb.RecordResult(
                    feedback_id=e.feedback_id,
                    status=fpb.RecordResult.REJECTED
                    if e.feedback_id in self.refuse
                    else fpb.RecordResult.ACCEPTED,
                )
                for e in request.events
            ]
        )

    def Record(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the outbox sends batches")

    def RecordDecisions(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not the queue's")

    def Get(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not the queue's")

    def Export(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not the queue's")

    def Labels(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not the queue's")


@pytest.fixture
def service() -> Iterator[tuple[Recording, str]]:
    recording = Recording(frozenset({"review-bad"}))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fpb_grpc.add_FeedbackServicer_to_server(recording, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield recording, f"127.0.0.1:{port}"
    server.stop(None)


def resolved(queue: ReviewQueue, escalation_id: str, corrected: int | None = 2) -> None:
    queue.submit([escalation(escalation_id)])
    item = queue.claim("alice", "", 0.0)
    verdict = Verdict.ACCEPT if corrected is None else Verdict.OVERRIDE
    queue.resolve(ReviewerVerdict(item.escalation_id, "alice", verdict, corrected))


def test_a_resolution_is_the_review_event_about_its_request(queue: ReviewQueue) -> None:
    resolved(queue, "e1", corrected=2)
    (item,) = queue.store.unforwarded(10, 0.0)
    event = review_event(item)
    assert (event.feedback_id, event.request_id, event.model) == ("review-e1", "req-e1", "m")
    assert event.type == fpb.FEEDBACK_REVIEW
    assert event.label.class_index == 2
    assert event.user_context["reviewer"] == "alice"
    assert event.user_context["verdict"] == "OVERRIDE"
    assert event.occurred_at == item.resolution.resolved_at  # type: ignore[union-attr]
    times = {key: float(event.user_context[key]) for key in REVIEW_TIMES}
    assert times == pytest.approx(
        {
            "escalated_at": item.escalation.created_at,
            "received_at": item.received_at,
            "claimed_at": item.claimed_at,
        },
        abs=1e-3,
    )


def test_the_evidence_goes_as_its_hash(queue: ReviewQueue) -> None:
    """The evidence a reviewer was shown reaches the feedback service as its sha256 (the
    text would not fit the event's context bound); none shown, no key."""
    queue.submit([escalation("e1"), escalation("e2")])
    shown = '{"shown_at": 3.0}'
    queue.claim("alice")
    queue.resolve(ReviewerVerdict("e1", "alice", Verdict.ACCEPT, evidence=shown))
    queue.claim("alice")
    queue.resolve(ReviewerVerdict("e2", "alice", Verdict.ACCEPT))
    first, second = (review_event(item) for item in queue.store.unforwarded(10, 0.0))
    assert first.user_context["evidence_sha256"] == hashlib.sha256(shown.encode()).hexdigest()
    assert "evidence_sha256" not in second.user_context


def test_everything_answered_for_is_marked_sent_and_nothing_while_unreachable(
    queue: ReviewQueue, service: tuple[Recording, str]
) -> None:
    recording, address = service
    for escalation_id in ("e1", "bad", "e3"):
        resolved(queue, escalation_id)
    unreachable = FeedbackOutbox(queue.store, FakeClock(), "127.0.0.1:1", ClientCredentials())
    assert unreachable.send() == 0
    assert len(queue.store.unforwarded(10, 0.0)) == 3
    outbox = FeedbackOutbox(queue.store, FakeClock(), address, ClientCredentials("t0ken"))
    assert outbox.send() == 3
    sent = sorted(e.feedback_id for e in recording.events)
    assert sent == ["review-bad", "review-e1", "review-e3"]
    assert recording.tokens == ["Bearer t0ken"]
    assert (outbox.sent, outbox.refused) == (3, 1)
    assert queue.store.unforwarded(10, 0.0) == []
    assert outbox.send() == 0  # nothing new
    outbox.close()
    unreachable.close()
