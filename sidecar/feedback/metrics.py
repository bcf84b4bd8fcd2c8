"""OpenTelemetry metrics of the feedback service. Attribute values are enums (type,
status, method, outcome), never free text such as model names or request ids, so
cardinality stays bounded.

    hitl.feedback.events   counter   events by type (OUTCOME, RATING, ...) and status
                                     (ACCEPTED, DUPLICATE, CONFLICT, REJECTED)
    hitl.feedback.decisions      counter  decision records by status
    hitl.feedback.dead_lettered  counter  events no decision claimed within the join window
    hitl.feedback.calls    counter   calls by method and outcome (OK, or the status
                                     code: UNAUTHENTICATED, PERMISSION_DENIED, ...)
    hitl.feedback.coverage       gauge    share of the monitor window's decisions with
                                          ground truth (an outcome, review or correction),
                                          by model and tier
    hitl.feedback.override_rate  gauge    share of those whose label differs from the
                                          prediction, by model and tier
    hitl.feedback.label_delay    gauge    seconds from decision to first label, p50 and
                                          p90 over the window, by model and tier
    hitl.feedback.loop_latency   histogram  seconds each stage of the loop took, by
                                          stage (delivered, claimed, resolved, joined,
                                          end_to_end: ``latency``) and event type

Prometheus names them ``hitl_feedback_events_total``, ``hitl_feedback_calls_total``
and so on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.feedback.latency import BUCKETS

# (model, tier) -> value; the label delay's by (model, tier, quantile)
Gauges = Mapping[tuple[str, ...], float]


class FeedbackMetrics:
    def __init__(self, meter: Meter) -> None:
        self._coverage: Gauges = {}
        self._overrides: Gauges = {}
        self._delays: Gauges = {}
        for name, read, unit, description in (
            ("hitl.feedback.coverage", lambda: self._coverage, "1",
             "Share of the window's decisions with ground truth, by model and tier"),
            ("hitl.feedback.override_rate", lambda: self._overrides, "1",
             "Share of the window's labelled decisions whose label differs from the"
             " prediction, by model and tier"),
            ("hitl.feedback.label_delay", lambda: self._delays, "s",
             "Seconds from a decision to its first label over the window, by model, tier"
             " and quantile (p50, p90)"),
        ):  # fmt: skip
            meter.create_observable_gauge(
                name, [_observer(read)], unit=unit, description=description
            )
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
        self.loop_latency = meter.create_histogram(
            "hitl.feedback.loop_latency",
            unit="s",
            description="Seconds each stage of the feedback loop took, by stage and event type",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )

    def refresh(self, coverage: Gauges, overrides: Gauges, delays: Gauges) -> None:
        """Replace the loop's gauges (the sweep's latest reading of the window)."""
        self._coverage, self._overrides, self._delays = coverage, overrides, delays


_KEYS = ("model", "tier", "quantile")


def _observer(read: Callable[[], Gauges]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, dict(zip(_KEYS, key, strict=False))) for key, v in read().items()]

    return observe
