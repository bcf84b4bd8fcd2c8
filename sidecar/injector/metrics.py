"""OpenTelemetry metrics of the injector. Attribute values are the Outcome enum and
a fixed set of HTTP results, never pod or namespace names, so cardinality stays
bounded.

    hitl.injector.admissions   counter    reviews by result: injected, skipped, rejected
                                          (a pod denied for a bad annotation), invalid
                                          (a body that is not an AdmissionReview)
    hitl.injector.duration     histogram  milliseconds to answer one review

Prometheus names them ``hitl_injector_admissions_total`` and
``hitl_injector_duration_milliseconds``."""

from __future__ import annotations

from opentelemetry.metrics import Meter

DURATION_BUCKETS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
INVALID = "invalid"


class InjectorMetrics:
    def __init__(self, meter: Meter) -> None:
        self.admissions = meter.create_counter(
            "hitl.injector.admissions", description="Admission reviews answered, by result"
        )
        self.duration = meter.create_histogram(
            "hitl.injector.duration",
            unit="ms",
            description="Time to answer one admission review",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS,
        )

    def record(self, result: str, milliseconds: float) -> None:
        self.admissions.add(1, {"result": result})
        self.duration.record(milliseconds)
