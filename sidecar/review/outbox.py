"""Resolutions to the feedback service: every resolved item becomes a REVIEW event
about the request it escalated, sent by the queue as a principal with the role
``review``, so a reviewer's label meets its decision like any other.

Run every second (``supervision.Periodic``) by the queue's process when
``HITL_REVIEW_FEEDBACK`` names the service: first the retractions of reverted
resolutions the service had, then the oldest unsent resolutions, a batch at a time,
each marked sent once the service has answered for it. An event the service refuses
for good (REJECTED, CONFLICT) is logged and marked too: it is not sent again. The
service unreachable: nothing is marked, and the next run retries. The evidence a
reviewer was shown goes as its sha256 (``evidence_sha256`` in the event's
user_context), so the event can be matched to the queue's copy.

Every event's ``feedback_id`` is fixed by what it is, so a batch sent twice (a crash
before the marks, two replicas at once) is recorded once: an item's first resolution
is ``review-<escalation_id>``, its n-th (after n - 1 reverts) ``review-<escalation_id>-<n>``,
naming the one it supersedes in ``supersedes``; a lead's revert of one the service
had is a RETRACTION of it, ``<its feedback_id>-retracted``. The service then labels
the request by the resolution that stands, or, after a revert not yet resolved
again, by none from the queue."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.clock import Clock
from sidecar.escalation.record import Escalation
from sidecar.review.bulk import Reverted
from sidecar.review.item import ReviewItem
from sidecar.review.store import ReviewStore
from sidecar.serving import bearer, client_channel
from sidecar.settings import ClientCredentials

log = structlog.get_logger("hitl.review")

BATCH = 500
SOURCE = "review-queue"


class Resolutions(Protocol):
    """What an outbox reads resolutions from and marks them in: the review queue's
    store or the Label Studio bridge's."""

    def unretracted(self, limit: int) -> list[tuple[Escalation, Reverted]]: ...

    def mark_retracted(self, reverts: Sequence[tuple[str, int]], now: float) -> None: ...

    def unforwarded_numbered(self, limit: int, now: float) -> list[tuple[ReviewItem, int]]: ...

    def mark_forwarded(self, resolved: Sequence[tuple[ReviewItem, int]], now: float) -> None: ...


StoreT = TypeVar("StoreT", bound=Resolutions)


class FeedbackSender:
    """RecordBatch calls to one feedback service, as the principal its credentials
    name: each event the service refuses for good (REJECTED, CONFLICT) is logged as
    ``<service>.feedback_refused`` and counted, and is not to be sent again; the
    service unreachable is logged as ``<service>.feedback_unavailable``."""

    def __init__(
        self, service: str, target: str, credentials: ClientCredentials, timeout: float = 10.0
    ) -> None:
        self._service = service
        self._target = target
        self._channel = client_channel(target, credentials.ca, credentials.cert, credentials.key)
        self._stub = fpb_grpc.FeedbackStub(self._channel)
        self._metadata = bearer(credentials.token)
        self._timeout = timeout
        self.sent = 0
        self.refused = 0

    def record(self, events: Sequence[fpb.FeedbackEvent]) -> bool:
        """Send events as one batch; False when the service could not be reached
        (nothing is to be marked sent)."""
        try:
            response = self._stub.RecordBatch(
                fpb.RecordBatchRequest(events=events),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
            log.warning(f"{self._service}.feedback_unavailable", target=self._target, code=code)
            return False
        for event, result in zip(events, response.results, strict=True):
            if result.status in (fpb.RecordResult.REJECTED, fpb.RecordResult.CONFLICT):
                self.refused += 1
                log.error(
                    f"{self._service}.feedback_refused",
                    escalation_id=event.user_context["escalation_id"],
                    feedback_id=event.feedback_id,
                    status=fpb.RecordResult.Status.Name(result.status),
                    error=result.message,
                )
        self.sent += len(events)
        return True

    def close(self) -> None:
        self._channel.close()


class Outbox(Generic[StoreT]):
    """Resolutions to the feedback service from a store of them: the sender logs as
    ``service``, the events carry ``source``."""

    service: ClassVar[str]
    source: ClassVar[str]

    def __init__(
        self,
        store: StoreT,
        clock: Clock,
        target: str,
        credentials: ClientCredentials,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sender = FeedbackSender(self.service, target, credentials, timeout)

    @property
    def sent(self) -> int:
        return self._sender.sent

    @property
    def refused(self) -> int:
        return self._sender.refused

    def send(self) -> int:
        """Send the unsent retractions, then the unsent resolutions, a batch at a time,
        until none is left or the service cannot be reached; how many events were sent."""
        sent = 0
        while reverts := self._store.unretracted(BATCH):
            events = [retraction_event(e, reverted, self.source) for e, reverted in reverts]
            if not self._sender.record(events):
                return sent
            self._store.mark_retracted(
                [(r.escalation_id, r.number) for _, r in reverts], self._clock.now()
            )
            sent += len(events)
        while resolved := self._store.unforwarded_numbered(BATCH, self._clock.now()):
            events = [review_event(item, number, self.source) for item, number in resolved]
            if not self._sender.record(events):
                return sent
            self._store.mark_forwarded(resolved, self._clock.now())
            sent += len(events)
        return sent

    def close(self) -> None:
        self._sender.close()


class FeedbackOutbox(Outbox[ReviewStore]):
    service = "review"
    source = SOURCE


def resolution_id(escalation_id: str, number: int = 1) -> str:
    """The feedback_id of the item's number-th resolution (1: its first)."""
    return f"review-{escalation_id}" + (f"-{number}" if number > 1 else "")


def review_event(item: ReviewItem, number: int = 1, source: str = SOURCE) -> fpb.FeedbackEvent:
    """A resolved item as the REVIEW event about the request it escalated; number:
    which of the item's resolutions it is (1 + its reverts); source: the review
    backend that resolved it."""
    r, e = item.resolution, item.escalation
    assert r is not None  # only resolved items are sent
    label = fpb.Label(name=r.label)
    if r.label_class >= 0:
        label.class_index = r.label_class
    return fpb.FeedbackEvent(
        feedback_id=resolution_id(e.escalation_id, number),
        request_id=e.request_id,
        model=e.model,
        model_version=e.model_version,
        type=fpb.FEEDBACK_REVIEW,
        label=label,
        source=source,
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
            # The reverted resolution this one replaces (its own retraction withdrew it
            # at the service, if the service had it).
            **({"supersedes": resolution_id(e.escalation_id, number - 1)} if number > 1 else {}),
        },
        occurred_at=r.resolved_at,
    )


def retraction_event(e: Escalation, reverted: Reverted, source: str = SOURCE) -> fpb.FeedbackEvent:
    """A lead's revert of a resolution the service had, as the RETRACTION of its label;
    source: the review backend that had sent it."""
    withdrawn = resolution_id(e.escalation_id, reverted.number)
    return fpb.FeedbackEvent(
        feedback_id=f"{withdrawn}-retracted",
        request_id=e.request_id,
        model=e.model,
        model_version=e.model_version,
        type=fpb.FEEDBACK_RETRACTION,
        retracts=withdrawn,
        source=source,
        user_context={
            "escalation_id": e.escalation_id,
            "reverted_by": reverted.reverted_by,
            "reason": reverted.reason,
        },
        occurred_at=reverted.reverted_at,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
