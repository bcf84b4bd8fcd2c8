"""OpenTelemetry metrics of the feedback service. Attribute values are enums (type,
status, method, outcome), never free text such as model names or request ids, so
cardinality stays bounded.

    hitl.feedback.events   counter   events by type (OUTCOME, RATING, ...) and status
                                     (ACCEPTED, DUPLICATE, CONFLICT, REJECTED)
    hitl.feedback.decisions      counter  decision records by status
    hitl.feedback.dead_lettered  counter  events no decision claimed within the join window
    hitl.feedback.calls    counter   calls by method and outcome (OK, or the status
                                     code: UNAUTHENTICATED, PERMISSION_DENIED, ...)

Prometheus names them ``hitl_feedback_events_total``, ``hitl_feedback_calls_total``
and so on."""

from __future__ import annotations

from opentelemetry.metrics import Meter


class FeedbackMetrics:
    def __init__(self, meter: Meter) -> None:
        self.events = meter.create_counter(
            "hitl.feedback.events", description="Feedback events by type and status"
        )
        self.decisions = meter.create_counter(
            "hitl.feedback.decisions", description="Decision records by status"
        )
        self.dead_lettered = meter.create_counter(
            "hitl.feedback.dead_lettered",
            description="Events no decision claimed within the join window",
        )
        self.calls = meter.create_counter(
            "hitl.feedback.calls", description="Calls by method and outcome (OK or the status)"
        )
