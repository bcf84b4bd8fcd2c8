"""Reviewer quality read from a real store (SQLite and PostgreSQL): consensus answers
reach the report, and the reviewer gauges take the last day's figures."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.clock import FakeClock
from sidecar.review.consensus import parse_consensus
from sidecar.review.item import Verdict
from sidecar.review.metrics import QUALITY_METRICS_WINDOW_SECONDS, ReviewMetrics
from sidecar.review.quality import Agreement
from sidecar.review.quality_window import refresh_gauges, window_report
from sidecar.review.queue import ReviewQueue
from sidecar.review.resolution import ReviewerVerdict
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from tests.escalations import escalation
from tests.unit.review.conftest import points


@pytest.fixture
def queue(store: ReviewStore, clock: FakeClock, metrics: ReviewMetrics) -> ReviewQueue:
    """Items of HUMAN_ASSISTED (the test escalations' tier) need two reviews."""
    policy = parse_consensus("HUMAN_ASSISTED=2:all", "HITL_REVIEW_CONSENSUS")
    return ReviewQueue(store, clock, Sla(), metrics, consensus=policy)


def work(
    queue: ReviewQueue,
    clock: FakeClock,
    reviewer: str,
    label: int | None = None,
    lead: bool = False,
) -> None:
    """reviewer claims the next item and, 20 s later, accepts it or overrides with label."""
    item = queue.claim(reviewer, lead=lead)
    clock.advance(20.0)
    verdict = Verdict.ACCEPT if label is None else Verdict.OVERRIDE
    queue.resolve(
        ReviewerVerdict(item.escalation_id, reviewer, verdict, label, rationale="seen", lead=lead)
    )


def answered(queue: ReviewQueue, clock: FakeClock) -> float:
    """Three items answered by alice and bob (the model predicts 1): e1 both accept;
    e2 alice accepts, bob says 0, lee adjudicates 0; e3 only alice has answered.
    Returns when the first claim was made."""
    start = clock.now()
    queue.submit([escalation(f"e{i}") for i in (1, 2, 3)])
    work(queue, clock, "alice")
    work(queue, clock, "bob")
    work(queue, clock, "alice")
    work(queue, clock, "bob", 0)
    work(queue, clock, "lee", 0, lead=True)  # adjudication
    work(queue, clock, "alice")
    return start


def test_consensus_answers_reach_the_report(queue: ReviewQueue, clock: FakeClock) -> None:
    """Each answer is counted with the agreement of its item's final class; an item
    still waiting for its second answer is not in the report yet."""
    start = answered(queue, clock)
    quality = window_report(queue, start, clock.now() + 1.0)
    assert {name: q.items for name, q in quality.reviewers.items()} == {
        "alice": 2,
        "bob": 2,
        "lee": 1,
    }
    assert quality.reviewers["alice"].consensus == Agreement(2, 0.5, 0.0)
    assert quality.reviewers["bob"].consensus == Agreement(2, 1.0, 1.0)
    pairs = {(p.first, p.second): p.agreement for p in quality.pairs}
    assert pairs == {("alice", "bob"): Agreement(2, 0.5, 0.0)}
    assert not quality.truth_available


def test_the_gauges_hold_the_last_days_figures(
    queue: ReviewQueue, clock: FakeClock, metrics: ReviewMetrics, reader: InMemoryMetricReader
) -> None:
    """Per reviewer: labels, median seconds, override rate, consensus agreement, and a
    0 flag for each check; a day later they are gone."""
    answered(queue, clock)
    refresh_gauges(queue, metrics)

    def by_reviewer(name: str) -> dict[str, float]:
        return {dict(k)["reviewer"]: v for k, v in points(reader, name).items()}

    assert by_reviewer("hitl.review.reviewer_items") == {"alice": 2, "bob": 2, "lee": 1}
    assert by_reviewer("hitl.review.reviewer_median_handling") == {
        "alice": 20.0,
        "bob": 20.0,
        "lee": 20.0,
    }
    assert by_reviewer("hitl.review.reviewer_override_rate") == {
        "alice": 0.0,
        "bob": 0.5,
        "lee": 1.0,
    }
    # lee only adjudicated: no consensus answer, so no series
    assert by_reviewer("hitl.review.reviewer_consensus_agreement") == {"alice": 0.5, "bob": 1.0}
    flags = points(reader, "hitl.review.reviewer_flagged")
    assert len(flags) == 6
    assert set(flags.values()) == {0}
    assert frozenset({("reviewer", "lee"), ("check", "override_rate")}) in flags
    clock.advance(QUALITY_METRICS_WINDOW_SECONDS + 1.0)
    refresh_gauges(queue, metrics)
    assert points(reader, "hitl.review.reviewer_items") == {}
