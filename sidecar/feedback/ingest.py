"""The feedback log's rules: validate each event (``validation``), check that the
sender's roles may send its type (``access``), then append it under the sender's
name, idempotently by ``feedback_id``. No transport here; the clock and the store
are given.

A single Record refuses an invalid event with the error itself (INVALID_ARGUMENT or
PERMISSION_DENIED naming the field); in a batch each event is judged on its own and
a refused one is REJECTED in place, with the same message, while the rest are kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.clock import Clock
from sidecar.core.validation import MAX_REQUEST_ID, check_text
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.feedback.access import check_type
from sidecar.feedback.metrics import FeedbackMetrics
from sidecar.feedback.records import Outcome, Received, received, type_name
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.validation import check_batch_size, check_event

log = structlog.get_logger("hitl.feedback")

REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class Result:
    feedback_id: str
    status: str  # an Outcome, or REJECTED
    message: str = ""  # why it was REJECTED or a CONFLICT


class FeedbackLog:
    def __init__(
        self, store: FeedbackStore, clock: Clock, metrics: FeedbackMetrics | None = None
    ) -> None:
        self.store = store
        self._clock = clock
        self._metrics = metrics

    def record(self, principal: Principal, event: fpb.FeedbackEvent) -> Result:
        """Append one event; InvalidRequest or PermissionDenied when it is refused."""
        _check(principal, event)
        return self._append(principal, [event])[0]

    def record_batch(
        self, principal: Principal, events: Sequence[fpb.FeedbackEvent]
    ) -> list[Result]:
        """Append each acceptable event; a refused one is REJECTED in place."""
        check_batch_size(len(events))
        results: list[Result | None] = [None] * len(events)
        valid: list[tuple[int, fpb.FeedbackEvent]] = []
        for i, event in enumerate(events):
            try:
                _check(principal, event)
            except (InvalidRequest, PermissionDenied) as exc:
                results[i] = Result(event.feedback_id, REJECTED, str(exc))
                self._count(event.type, REJECTED)
                continue
            valid.append((i, event))
        appended = self._append(principal, [event for _, event in valid])
        for (i, _), result in zip(valid, appended, strict=True):
            results[i] = result
        return [result for result in results if result is not None]

    def history(self, request_id: str) -> list[Received]:
        """Every event about request_id, in the order received."""
        check_text(request_id, "request_id", MAX_REQUEST_ID, required=True)
        return self.store.history(request_id)

    def _append(self, principal: Principal, events: Sequence[fpb.FeedbackEvent]) -> list[Result]:
        if not events:
            return []
        now = self._clock.now()
        outcomes = self.store.add([received(event, principal.name, now) for event in events])
        results = []
        for event, outcome in zip(events, outcomes, strict=True):
            self._count(event.type, outcome)
            message = ""
            if outcome is Outcome.CONFLICT:
                message = f"feedback_id {event.feedback_id!r} holds another event; it stays"
                log.warning(
                    "feedback.conflict", feedback_id=event.feedback_id, sender=principal.name
                )
            results.append(Result(event.feedback_id, outcome.value, message))
        return results

    def _count(self, event_type: fpb.FeedbackType.ValueType, status: str) -> None:
        if self._metrics is not None:
            known = event_type in fpb.FeedbackType.values()
            name = type_name(event_type) if known else "UNKNOWN"
            self._metrics.events.add(1, {"type": name, "status": status})


def _check(principal: Principal, event: fpb.FeedbackEvent) -> None:
    check_event(event)
    check_type(principal, event.type)
