"""Reviewers compared with ground truth, with real processes: ``hitl feedback serve``
and ``hitl review serve`` (console, metrics, ``--feedback``). A sidecar's decisions and
an application's outcomes reach the feedback service; reviewers label the same
requests in the console; the queue reads the outcomes with the Labels call as its
``review`` principal. The quality API and page show each reviewer's agreement with
the truth, the gauge appears on the scrape; the feedback service stopped, the page
still answers, saying ground truth is unavailable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.client import outcome_event
from tests.escalations import escalation
from tests.feedback_service import (
    PRINCIPALS,
    FeedbackProcess,
    add_principals,
    start,
    stop,
)
from tests.integration.conftest import (
    ReviewProcess,
    start_review_console,
    wait_for,
)
from tests.integration.test_review_quality import answer, scrape, signed_in
from tests.ports import free_port

pytestmark = pytest.mark.integration

LABELS = ["legitimate", "fraud", "refund"]
# What each request turned out to be (the model predicted 1, "fraud", for all).
TRUTH = {"req-t1": 1, "req-t2": 0, "req-t3": 2, "req-t4": 0}


@pytest.fixture
def feedback(tmp_path: Path) -> Iterator[FeedbackProcess]:
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    running = start(tmp_path / "feedback", db, add_principals(db, PRINCIPALS))
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.fixture
def queue(tmp_path: Path, feedback: FeedbackProcess) -> Iterator[tuple[ReviewProcess, str, int]]:
    """A review queue sending to (and reading) the feedback service as ``queue``, with
    its console and metrics; the console's URL, the metrics port."""
    token = tmp_path / "queue.token"
    token.write_text(feedback.tokens["queue"])
    metrics = free_port()
    running, base = start_review_console(
        tmp_path,
        "--metrics-addr", f"127.0.0.1:{metrics}",
        "--sweep-seconds", "0.2",
        "--feedback", feedback.address,
        "--feedback-token-file", str(token),
    )  # fmt: skip
    yield running, base, metrics
    running.process.kill()
    running.process.wait()


def decision(request_id: str) -> fpb.DecisionRecord:
    return fpb.DecisionRecord(
        request_id=request_id,
        model="m",
        model_version="v1",
        tier=dpb.TIER_HUMAN_ASSISTED,
        reason=dpb.REASON_THRESHOLD,
        predicted_class=1,
        predicted_label="fraud",
        logits=[0.5, 2.0, -1.0],
        labels=LABELS,
        decided_at=1_799_999_990.0,
        inclusion_probability=1.0,
    )


def quality(base: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{base}/api/quality", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def truth_gauges(port: int) -> dict[str, float]:
    return {
        sample.labels["reviewer"]: sample.value
        for family in text_string_to_metric_families(scrape(port))
        for sample in family.samples
        if sample.name == "hitl_review_reviewer_truth_agreement"
    }


def test_reviewers_are_compared_with_the_outcomes_the_feedback_service_holds(
    tmp_path: Path, feedback: FeedbackProcess, queue: tuple[ReviewProcess, str, int]
) -> None:
    """alice labels t1 (right) and t2 (wrong), bob t3 (right) and t4 (right): the API's
    truth agreement per reviewer and the gauge; the service stopped: unavailable."""
    running, base, metrics = queue
    with feedback.client("sidecar-1") as sidecar:
        results = sidecar.record_decisions([decision(r) for r in TRUTH])
        assert {r.status for r in results} == {fpb.RecordResult.ACCEPTED}
    with feedback.client("app") as app:
        events = [
            outcome_event(f"o-{r}", r, "m", true_class=c, label=LABELS[c]) for r, c in TRUTH.items()
        ]
        assert {r.status for r in app.record_batch(events)} == {fpb.RecordResult.ACCEPTED}
        with pytest.raises(grpc.RpcError) as denied:  # an application may not read them
            app.labels(list(TRUTH))
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with running.client("sidecar-1") as client:
        client.submit(
            [escalation(f"t{i}", labels=LABELS, predicted_label="fraud") for i in range(1, 5)]
        )
    tokens = running.tokens
    assert answer(base, tokens["alice"]) == "t1"  # accepts 1: right
    assert answer(base, tokens["alice"]) == "t2"  # accepts 1: wrong, it was 0
    assert answer(base, tokens["bob"], 2) == "t3"
    assert answer(base, tokens["bob"], 0) == "t4"
    with feedback.client("ops") as viewer:  # the queue's labels reach the service too

        def reviewed() -> bool:
            histories = [viewer.get(r).events for r in TRUTH]
            return all(any(e.event.type == fpb.FEEDBACK_REVIEW for e in h) for h in histories)

        wait_for(reviewed, 10.0, "the reviews sent")
    with feedback.client("queue") as reader:  # and are not ground truth
        assert {
            label.request_id: label.class_index for label in reader.labels(list(TRUTH))
        } == TRUTH
        with pytest.raises(grpc.RpcError) as refused:
            reader.labels(list(TRUTH), ["review"])
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "label_sources" in str(refused.value.details())

    def agreement() -> dict[str, Any]:
        report = quality(base, tokens["lead"])
        return {name: q["truth"] for name, q in report["reviewers"].items()}

    wait_for(
        lambda: agreement().get("alice", {}).get("items") == 2, 20.0, "the truth in the report"
    )
    report = quality(base, tokens["lead"])
    assert report["truth_available"] is True
    assert report["ground_truth"]["sources"] == ["outcome", "correction"]
    assert report["reviewers"]["alice"]["truth"]["rate"] == 0.5
    assert report["reviewers"]["bob"]["truth"] == {"items": 2, "rate": 1.0, "kappa": 1.0}
    wait_for(lambda: truth_gauges(metrics) == {"alice": 0.5, "bob": 1.0}, 10.0, "the gauge")
    with signed_in(base, tokens["lead"]) as browser:
        page = browser.get("/quality")
    assert page.status_code == 200
    assert "agrees with ground truth" in page.text
    assert 'id="truth-sources"' in page.text

    stop(feedback, tmp_path / "feedback")
    wait_for(
        lambda: quality(base, tokens["lead"])["truth_available"] is False,
        20.0,
        "ground truth unavailable",
    )
    report = quality(base, tokens["lead"])
    assert "UNAVAILABLE" in report["ground_truth"]["reason"]
    assert report["reviewers"]["alice"]["items"] == 2  # the rest of the report stands
    with signed_in(base, tokens["lead"]) as browser:
        page = browser.get("/quality")
    assert page.status_code == 200
    assert 'id="truth-unavailable"' in page.text
    assert "Ground truth is unavailable" in page.text
    wait_for(lambda: truth_gauges(metrics) == {}, 10.0, "the gauge gone")
    failures = [e for e in running.log() if e["event"] == "task.failed"]
    assert any(e["task"] == "review-quality" for e in failures)
