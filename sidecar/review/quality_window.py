"""Reviewer quality read from the queue: the report over a window of the store's
resolved items, for the console's page and API, and the refresh of the reviewer
gauges, which the queue's process runs beside the overdue sweep (``app``), so a
scrape never waits on the database. The figures are ``quality``'s; this module only
reads.

Ground truth comes from the feedback service when the queue sends to one
(``HITL_REVIEW_FEEDBACK``): ``ground_truth`` caches its outcomes and corrections.
The gauges' refresh reads the service first, for the requests of its window and
those pages asked for (a failure is raised to the task's supervisor after the gauges
are refreshed without truth); a page reads only the cache. Without a feedback
service, or while it cannot be read, the report says ground truth is unavailable
(``truth_available`` false) rather than show no match."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.review.ground_truth import GroundTruth, Known, TruthUnavailable
from sidecar.review.item import ReviewItem
from sidecar.review.metrics import QUALITY_METRICS_WINDOW_SECONDS, ReviewMetrics
from sidecar.review.quality import QualityReport, reviewer_quality
from sidecar.review.queue import ReviewQueue

TRUTH_UNAVAILABLE = (
    "the review queue reads no feedback service (HITL_REVIEW_FEEDBACK is not set), so it"
    " has no outcomes to compare labels with"
)
NO_TRUTH = Known(None, reason=TRUTH_UNAVAILABLE)


def window_report(
    queue: ReviewQueue,
    since: float,
    until: float,
    model: str = "",
    truth: GroundTruth | None = None,
) -> QualityReport:
    """The report over the labels given in ``[since, until)`` on items resolved since
    ``since`` (of ``model``, if not empty). Answers to items not yet resolved wait
    until they are: their final class is not known before. ``truth``: the cache of
    the feedback service's labels (None: no ground truth)."""
    return truth_report(queue, since, until, model, truth)[0]


def truth_report(
    queue: ReviewQueue,
    since: float,
    until: float,
    model: str = "",
    truth: GroundTruth | None = None,
) -> tuple[QualityReport, Known]:
    """As ``window_report``, with what the cache knew of the window's requests."""
    items = list(queue.export(model, since))
    known = NO_TRUTH if truth is None else truth.known(request_ids(items))
    report = reviewer_quality(items, since=since, until=until, truth=known.classes)
    return report, known


def refresh_gauges(
    queue: ReviewQueue,
    metrics: ReviewMetrics,
    window_seconds: float = QUALITY_METRICS_WINDOW_SECONDS,
    truth: GroundTruth | None = None,
) -> None:
    """Read the ground truth of the last ``window_seconds``' requests (and those
    pages wanted) into the cache, then recompute the reviewer gauges over that
    window. The feedback service failing: the gauges are recomputed without truth,
    then the failure is raised (TruthUnavailable) for the supervisor to log and count."""
    until = queue.now()
    since = max(0.0, until - window_seconds)
    items = list(queue.export("", since))
    failure = None
    known = NO_TRUTH
    if truth is not None:
        try:
            truth.refresh(request_ids(items))
        except TruthUnavailable as exc:  # raised again below, after the gauges
            failure = exc
        known = truth.known(request_ids(items))
    metrics.refresh_quality(reviewer_quality(items, since=since, until=until, truth=known.classes))
    if failure is not None:
        raise failure


def request_ids(items: Sequence[ReviewItem]) -> list[str]:
    return [item.escalation.request_id for item in items]
