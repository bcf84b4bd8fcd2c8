"""Ground truth for reviewer quality: the cache of the feedback service's labels
(what is read, when again, what a page sees, how it is bounded), the gauges and
reports that use it, and what the service failing does to each. The service here is
an in-memory LabelSource; the real one is tests/integration/test_review_truth.py's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.clock import FakeClock
from sidecar.review.consensus import parse_consensus
from sidecar.review.ground_truth import FeedbackLabels, GroundTruth, TruthUnavailable
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.quality import Agreement
from sidecar.review.quality_window import TRUTH_UNAVAILABLE, refresh_gauges, truth_report
from sidecar.review.queue import ReviewQueue
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from sidecar.settings import ClientCredentials
from tests.ports import free_port
from tests.unit.review.conftest import points
from tests.unit.review.test_quality_window import answered

# What the model's requests turned out to be: e1 as predicted, e2 not, e3 as predicted.
TRUE = {"req-e1": 1, "req-e2": 0, "req-e3": 1}


class Labels:
    """The feedback service's Labels call, in memory: it knows ``known``; it fails
    while ``down``; it remembers every batch it was asked."""

    def __init__(self, known: Mapping[str, int]) -> None:
        self.known = dict(known)
        self.down = False
        self.asked: list[list[str]] = []

    def labels(self, request_ids: Sequence[str]) -> dict[str, int]:
        if self.down:
            raise TruthUnavailable("the feedback service at test: UNAVAILABLE: down")
        self.asked.append(list(request_ids))
        return {rid: self.known[rid] for rid in request_ids if rid in self.known}


@pytest.fixture
def queue(store: ReviewStore, clock: FakeClock, metrics: ReviewMetrics) -> ReviewQueue:
    policy = parse_consensus("HUMAN_ASSISTED=2:all", "HITL_REVIEW_CONSENSUS")
    return ReviewQueue(store, clock, Sla(), metrics, consensus=policy)


def test_only_ids_not_cached_or_too_old_are_read_a_batch_at_a_time(clock: FakeClock) -> None:
    """Nothing due, the batch read longest ago is read again (the service is asked
    something every time)."""
    source = Labels(TRUE)
    truth = GroundTruth(source, clock, max_age=300.0, batch=2)
    assert truth.refresh(["req-e1", "req-e2", "req-e3", "req-e1", "other"]) == 4
    assert source.asked == [["req-e1", "req-e2"], ["req-e3", "other"]]
    clock.advance(299.0)
    assert truth.refresh(["req-e3", "other"]) == 2
    assert source.asked[-1] == ["req-e1", "req-e2"]
    clock.advance(1.0)
    assert truth.refresh(["req-e3", "other"]) == 2  # an answer 300 s old is asked again
    assert source.asked[-1] == ["req-e3", "other"]
    known = truth.known(["req-e1", "req-e2", "other"])
    assert known.classes == {"req-e1": 1, "req-e2": 0}  # "other" has no ground truth
    assert (known.pending, known.read_at, known.reason) == (0, clock.now(), "")


def test_a_page_reads_the_cache_and_what_it_lacks_is_read_next(clock: FakeClock) -> None:
    """known never calls the service; the ids it lacked go with the next refresh."""
    source = Labels(TRUE)
    truth = GroundTruth(source, clock)
    truth.refresh(["req-e1"])
    known = truth.known(["req-e1", "req-e2", "req-e3"])
    assert (known.classes, known.pending) == ({"req-e1": 1}, 2)
    assert source.asked == [["req-e1"]]
    truth.refresh([])
    assert source.asked[-1] == ["req-e2", "req-e3"]
    assert truth.known(["req-e2", "req-e3"]).classes == {"req-e2": 0, "req-e3": 1}


def test_what_a_page_lacked_is_read_once_the_service_answers_again(clock: FakeClock) -> None:
    """A refresh that fails keeps the ids pages asked for: the next one reads them."""
    source = Labels(TRUE)
    truth = GroundTruth(source, clock)
    truth.refresh(["req-e1"])
    assert truth.known(["req-e2"]).pending == 1
    source.down = True
    with pytest.raises(TruthUnavailable):
        truth.refresh([])
    source.down = False
    truth.refresh([])
    assert source.asked[-1] == ["req-e2"]


def test_the_service_down_makes_truth_unavailable_until_it_answers_again(
    clock: FakeClock,
) -> None:
    source = Labels(TRUE)
    truth = GroundTruth(source, clock)
    never = truth.known(["req-e1"])
    assert (never.classes, never.reason) == (None, "the feedback service has not been read yet")
    truth.refresh(["req-e1"])
    source.down = True
    clock.advance(600.0)
    with pytest.raises(TruthUnavailable, match="UNAVAILABLE"):
        truth.refresh(["req-e1"])
    down = truth.known(["req-e1"])
    assert down.classes is None
    assert down.reason == "the feedback service at test: UNAVAILABLE: down"
    assert down.as_json()["available"] is False
    source.down = False
    truth.refresh(["req-e1"])
    assert truth.known(["req-e1"]).classes == {"req-e1": 1}


def test_the_cache_keeps_at_most_max_entries_dropping_the_oldest_read(clock: FakeClock) -> None:
    source = Labels(TRUE)
    truth = GroundTruth(source, clock, max_entries=2)
    truth.refresh(["req-e1"])
    clock.advance(1.0)
    truth.refresh(["req-e2", "req-e3"])
    assert truth.known(["req-e1", "req-e2", "req-e3"]).pending == 1  # req-e1 dropped
    assert source.asked[-1] == ["req-e2", "req-e3"]


def test_the_report_and_gauges_compare_reviewers_with_the_truth(
    queue: ReviewQueue, clock: FakeClock, metrics: ReviewMetrics, reader: InMemoryMetricReader
) -> None:
    """alice said 1 for e1 and e2 (truth 1 and 0); bob 1 and 0; lee, adjudicating e2, 0."""
    start = answered(queue, clock)
    truth = GroundTruth(Labels(TRUE), clock)
    refresh_gauges(queue, metrics, truth=truth)
    agreement = {
        dict(k)["reviewer"]: v
        for k, v in points(reader, "hitl.review.reviewer_truth_agreement").items()
    }
    assert agreement == {"alice": 0.5, "bob": 1.0, "lee": 1.0}
    report, known = truth_report(queue, start, clock.now() + 1.0, truth=truth)
    assert report.truth_available
    assert report.reviewers["alice"].truth == Agreement(2, 0.5, 0.0)
    assert report.reviewers["bob"].truth.rate == 1.0
    assert known.as_json() == {
        "available": True,
        "sources": ["outcome", "correction"],
        "read_at": clock.now(),
        "pending": 0,
        "reason": "",
    }


def test_the_service_down_the_gauges_refresh_without_truth_and_the_task_fails(
    queue: ReviewQueue, clock: FakeClock, metrics: ReviewMetrics, reader: InMemoryMetricReader
) -> None:
    start = answered(queue, clock)
    source = Labels(TRUE)
    truth = GroundTruth(source, clock)
    refresh_gauges(queue, metrics, truth=truth)
    source.down = True
    clock.advance(600.0)
    with pytest.raises(TruthUnavailable):
        refresh_gauges(queue, metrics, truth=truth)
    assert points(reader, "hitl.review.reviewer_truth_agreement") == {}
    items = {
        dict(k)["reviewer"]: v for k, v in points(reader, "hitl.review.reviewer_items").items()
    }
    assert items == {"alice": 2, "bob": 2, "lee": 1}
    report, known = truth_report(queue, start, clock.now(), truth=truth)
    assert not report.truth_available
    assert "UNAVAILABLE" in known.reason


def test_without_a_feedback_service_the_report_says_why_truth_is_unavailable(
    queue: ReviewQueue, clock: FakeClock
) -> None:
    start = answered(queue, clock)
    report, known = truth_report(queue, start, clock.now())
    assert not report.truth_available
    assert known.reason == TRUTH_UNAVAILABLE


def test_an_unreachable_service_is_truth_unavailable_naming_it() -> None:
    """Nothing listens on the port: the call fails within its deadline."""
    target = f"127.0.0.1:{free_port()}"
    labels = FeedbackLabels(target, ClientCredentials("token"), timeout=2.0)
    try:
        with pytest.raises(TruthUnavailable, match=f"{target}: UNAVAILABLE"):
            labels.labels(["req-e1"])
    finally:
        labels.close()
