"""Resolutions to the feedback service: every resolved item becomes a REVIEW event
about the request it escalated, sent by the queue as a principal with the role
``review``, so a reviewer's label meets its decision like any other.

Run every second (``supervision.Periodic``) by the queue's process when
``HITL_REVIEW_FEEDBACK`` names the service: the oldest unsent resolutions, a batch
at a time, each marked sent once the service has answered for it. The event's
``feedback_id`` is the escalation's (``review-<escalation_id>``), so a batch sent
twice (a crash before the marks, two replicas at once) is recorded once. An event
the service refuses for good (REJECTED, CONFLICT) is logged and marked too: it is
not sent again. The service unreachable: nothing is marked, and the next run
retries. The evidence a reviewer was shown goes as its sha256 (``evidence_sha256``
in the event's user_context), so the event can be matched to the queue's copy."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.clock import Clock
from sidecar.review.item import ReviewItem
from sidecar.review.store import ReviewStore
from sidecar.serving import bearer, client_channel
from sidecar.settings import ClientCredentials

log = structlog.get_logger("hitl.review")

BATCH = 500
SOURCE = "review-queue"


class FeedbackOutbox:
    def __init__(
        self,
        store: ReviewStore,
        clock: Clock,
        target: str,
        credentials: ClientCredentials,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._target = target
        self._channel = client_channel(target, credentials.ca, credentials.cert, credentials.key)
        self._stub = fpb_grpc.FeedbackStub(self._channel)
        self._metadata = bearer(credentials.token)
        self._timeout = timeout
        self.sent = 0
        self.refused = 0

    def send(self) -> int:
        """Send the unsent resolutions, a batch at a time, until none is left or the
        service cannot be reached; how many were sent."""
        sent = 0
        while items := self._store.unforwarded(BATCH, self._clock.now()):
            try:
                response = self._stub.RecordBatch(
                    fpb.RecordBatchRequest(events=[review_event(item) for item in items]),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.RpcError as exc:
                code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
                log.warning("review.feedback_unavailable", target=self._target, code=code)
                return sent
            self._refused(items, response.results)
            self._store.mark_forwarded([item.escalation_id for item in items], self._clock.now())
            sent += len(items)
            self.sent += len(items)
        return sent

    def close(self) -> None:
        self._channel.close()

    def _refused(self, items: Sequence[ReviewItem], results: Sequence[fpb.RecordResult]) -> None:
        for item, result in zip(items, results, strict=True):
            if result.status in (fpb.RecordResult.REJECTED, fpb.RecordResult.CONFLICT):
                self.refused += 1
                log.error(
                    "review.feedback_refused",
                    escalation_id=item.escalation_id,
                    status=fpb.RecordResult.Status.Name(result.status),
                    error=result.message,
                )


def review_event(item: ReviewItem) -> fpb.FeedbackEvent:
    """A resolved item as the REVIEW event about the request it escalated."""
    r, e = item.resolution, item.escalation
    assert r is not None  # only resolved items are sent
    label = fpb.Label(name=r.label)
    if r.label_class >= 0:
        label.class_index = r.label_class
    return fpb.FeedbackEvent(
        feedback_id=f"review-{e.escalation_id}",
        request_id=e.request_id,
        model=e.model,
        model_version=e.model_version,
        type=fpb.FEEDBACK_REVIEW,
        label=label,
        source=SOURCE,
        user_context={
            "escalation_id": e.escalation_id,
            "reviewer": r.reviewer,
            "verdict": r.verdict.value,
            "time_to_label_seconds": f"{r.time_to_label_seconds:g}",
            # The loop's stages in the queue (sidecar.feedback.latency).
            "escalated_at": f"{e.created_at:.3f}",
            "received_at": f"{item.received_at:.3f}",
            **({"claimed_at": f"{item.claimed_at:.3f}"} if item.claimed_at else {}),
            **({"acted_by": r.acted_by} if r.acted_by else {}),
            # Of an item that needed several reviews: "2 of 3", or "adjudicated (...)".
            **({"agreement": r.agreement} if r.agreement else {}),
            # Its hash, not the text: the evidence (up to 16 KiB) would not fit the
            # event's context bound (16 KiB in all); the queue keeps the text.
            **({"evidence_sha256": _sha256(r.evidence)} if r.evidence else {}),
        },
        occurred_at=r.resolved_at,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
