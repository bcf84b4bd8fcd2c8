"""OpenTelemetry metrics of the review queue. Instruments are created once; attribute
values are enums (tier, result, verdict, state), never free text such as model
names, so cardinality stays bounded.

    hitl.review.submitted      counter    escalations by result (accepted, duplicate,
                                          rejected) and tier
    hitl.review.resolved       counter    resolutions by verdict and tier
    hitl.review.consensus      counter    items needing several reviews by outcome
                                          (agreed: resolved by consensus; adjudication:
                                          sent to a lead; adjudicated: a lead resolved
                                          it) and tier
    hitl.review.overdue        counter    items raised a level for passing their deadline
    hitl.review.time_to_label  histogram  seconds from claim (or as the reviewer's tool
                                          measured) to label, by tier
    hitl.review.items          gauge      unresolved items by state (open, claimed), tier
                                          (an item in adjudication is open, to leads)
    hitl.review.calls          counter    calls by method and outcome (OK, or the status
                                          code: UNAUTHENTICATED, PERMISSION_DENIED, ...)

Prometheus names them ``hitl_review_submitted_total``, ``hitl_review_overdue_total``
and so on. The gauge reports the counts of the last sweep (``refresh``), so a
scrape never waits on the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.review.item import TIERS, ItemState

TIME_TO_LABEL_BUCKETS_S = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


class ReviewMetrics:
    def __init__(self, meter: Meter) -> None:
        self.submitted = meter.create_counter(
            "hitl.review.submitted", description="Escalations submitted, by result and tier"
        )
        self.resolved = meter.create_counter(
            "hitl.review.resolved", description="Items resolved, by verdict and tier"
        )
        self.consensus = meter.create_counter(
            "hitl.review.consensus",
            description="Items needing several reviews, by outcome (agreed, adjudication,"
            " adjudicated) and tier",
        )
        self.overdue = meter.create_counter(
            "hitl.review.overdue",
            description="Items raised an escalation level for passing their deadline, by tier",
        )
        self.time_to_label = meter.create_histogram(
            "hitl.review.time_to_label",
            unit="s",
            description="Seconds a reviewer took to label an item, by tier",
            explicit_bucket_boundaries_advisory=[float(b) for b in TIME_TO_LABEL_BUCKETS_S],
        )
        self.calls = meter.create_counter(
            "hitl.review.calls", description="Calls by method and outcome (OK or the status)"
        )
        self._items: dict[tuple[str, str], int] = {}
        meter.create_observable_gauge(
            "hitl.review.items",
            [self._observe_items],
            description="Unresolved items by state (open, claimed) and tier, as of the last sweep",
        )

    def refresh(self, counts: Mapping[tuple[ItemState, str], int]) -> None:
        """Replace the gauge's counts; every state and tier is reported, 0 if absent."""
        self._items = {
            (state.value.lower(), tier): counts.get((state, tier), 0)
            for state in (ItemState.OPEN, ItemState.CLAIMED)
            for tier in TIERS
        }

    def _observe_items(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"state": state, "tier": tier})
            for (state, tier), count in self._items.items()
        ]
