"""Reviewer quality read from the queue: the report over a window of the store's
resolved items, for the console's page and API, and the refresh of the reviewer
gauges, which the queue's process runs beside the overdue sweep (``app``), so a
scrape never waits on the database. The figures are ``quality``'s; this module only
reads.

Ground truth is not read: the feedback service holds later outcomes and
corrections, but answers reads only to its ``viewer`` (one request at a time) and
``exporter`` (whole datasets) roles, not to the ``review`` role the queue sends
with. The report says so (``truth_available`` false) rather than show no match."""

from __future__ import annotations

from sidecar.review.metrics import QUALITY_METRICS_WINDOW_SECONDS, ReviewMetrics
from sidecar.review.quality import QualityReport, reviewer_quality
from sidecar.review.queue import ReviewQueue

TRUTH_UNAVAILABLE = (
    "Ground truth is not available: the feedback service offers the review queue no"
    " read of its outcomes and corrections."
)


def window_report(queue: ReviewQueue, since: float, until: float, model: str = "") -> QualityReport:
    """The report over the labels given in ``[since, until)`` on items resolved since
    ``since`` (of ``model``, if not empty), read a page at a time. Answers to items
    not yet resolved wait until they are: their final class is not known before."""
    return reviewer_quality(queue.export(model, since), since=since, until=until)


def refresh_gauges(
    queue: ReviewQueue,
    metrics: ReviewMetrics,
    window_seconds: float = QUALITY_METRICS_WINDOW_SECONDS,
) -> None:
    """Recompute the reviewer gauges over the last ``window_seconds``."""
    until = queue.now()
    metrics.refresh_quality(window_report(queue, max(0.0, until - window_seconds), until))
