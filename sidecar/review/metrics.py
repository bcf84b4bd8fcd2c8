"""OpenTelemetry metrics of the review queue. Instruments are created once; attribute
values are enums (tier, result, verdict, state, check), never free text such as
model names, so cardinality stays bounded. The one exception is ``reviewer`` on the
reviewer gauges: a principal's name, which only the queue's principals table
(``hitl review principal add``) can create, so there are as many series as
reviewers who labelled in the window, times two for the flag.

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

Reviewer quality over the last ``QUALITY_METRICS_WINDOW_SECONDS`` (a day), by
reviewer, as ``sidecar.review.quality`` computes it (its docstring says how):

    hitl.review.reviewer_items             gauge  labels given in the window
    hitl.review.reviewer_median_handling   gauge  median seconds to label (unit s)
    hitl.review.reviewer_override_rate     gauge  share of OVERRIDE verdicts
    hitl.review.reviewer_consensus_agreement
                                           gauge  share of answers equal to their
                                                  item's final class (only reviewers
                                                  who answered consensus items)
    hitl.review.reviewer_truth_agreement
                                           gauge  share of labels equal to the ground
                                                  truth the feedback service holds (only
                                                  reviewers with labels it has truth for,
                                                  and only while it can be read)
    hitl.review.reviewer_flagged           gauge  1 when the check (labels,
                                                  override_rate) flagged the reviewer,
                                                  else 0; every reviewer, both checks

Prometheus names them ``hitl_review_submitted_total``, ``hitl_review_overdue_total``,
``hitl_review_reviewer_median_handling_seconds`` and so on. The gauges report what
the last sweep read (``refresh``, ``refresh_quality``), so a scrape never waits on
the database."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.review.item import TIERS, ItemState
from sidecar.review.quality import Check, QualityReport

QUALITY_METRICS_WINDOW_SECONDS = 86400.0

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

        self._reviewers: dict[str, list[Observation]] = {}
        for name, unit, description in (
            ("items", "", "Labels each reviewer gave in the last day"),
            ("median_handling", "s", "Each reviewer's median seconds to label, last day"),
            ("override_rate", "", "Each reviewer's share of OVERRIDE verdicts, last day"),
            (
                "consensus_agreement",
                "",
                "Each reviewer's share of consensus answers equal to the item's final class,"
                " last day",
            ),
            (
                "truth_agreement",
                "",
                "Each reviewer's share of labels equal to the feedback service's ground truth"
                " (outcomes, corrections), last day",
            ),
            (
                "flagged",
                "",
                "1 when a check (labels, override_rate) flagged the reviewer's departure from"
                " the pool, last day",
            ),
        ):
            meter.create_observable_gauge(
                f"hitl.review.reviewer_{name}",
                [self._observer(name)],
                unit=unit,
                description=description,
            )

    def refresh_quality(self, report: QualityReport) -> None:
        """Replace the reviewer gauges with report's figures (reviewers who gave no
        label in its window drop out)."""
        flagged = {(d.reviewer, d.check) for d in report.flags}
        gauges: dict[str, list[Observation]] = {
            "items": [],
            "median_handling": [],
            "override_rate": [],
            "consensus_agreement": [],
            "truth_agreement": [],
            "flagged": [],
        }
        for name, q in report.reviewers.items():
            who = {"reviewer": name}
            gauges["items"].append(Observation(q.items, who))
            gauges["median_handling"].append(Observation(q.median_seconds, who))
            gauges["override_rate"].append(Observation(q.override_rate, who))
            if q.consensus.rate is not None:
                gauges["consensus_agreement"].append(Observation(q.consensus.rate, who))
            if q.truth.rate is not None:
                gauges["truth_agreement"].append(Observation(q.truth.rate, who))
            for check in Check:
                value = int((name, check) in flagged)
                gauges["flagged"].append(Observation(value, {**who, "check": check.value}))
        self._reviewers = gauges

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return self._reviewers.get(name, [])

        return observe

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
