"""The feedback service's Labels call on a real ``hitl feedback serve``, over HTTP
(Connect, as curl sends it) and from ``hitl feedback labels``: the label that stands
per request for the review and viewer roles, refused to others, a bad request
refused naming the field. The gRPC call, from the review queue, is
tests/integration/test_review_truth.py's."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.client import outcome_event
from tests.feedback_service import FeedbackProcess
from tests.integration.conftest import hitl_command
from tests.integration.test_feedback import http_service, post
from tests.integration.test_review_truth import decision

pytestmark = pytest.mark.integration

__all__ = ["http_service"]  # the fixture, shared with the feedback service's tests


def test_labels_over_http_for_the_review_role(http_service: FeedbackProcess) -> None:
    with http_service.client("sidecar-1") as sidecar:
        sidecar.record_decisions([decision("req-1"), decision("req-2")])
    with http_service.client("app") as app:
        app.record(outcome_event("o-1", "req-1", "m", true_class=2))
    review = fpb.FeedbackEvent(
        feedback_id="review-2", request_id="req-2", model="m", type=fpb.FEEDBACK_REVIEW,
        label=fpb.Label(class_index=0),
    )  # fmt: skip
    with http_service.client("queue") as queue:
        queue.record(review)  # the queue's own label: not ground truth
    tokens = http_service.tokens
    asked = json.dumps({"requestIds": ["req-2", "req-1", "req-3"]}).encode()
    status, answer = post(http_service, "Labels", asked, tokens["queue"])
    assert status == 200
    (label,) = answer["labels"]
    assert {k: label[k] for k in ("requestId", "classIndex", "source")} == {
        "requestId": "req-1",
        "classIndex": 2,
        "source": "outcome",
    }
    assert label["receivedAt"] > 0
    assert post(http_service, "Labels", asked, tokens["ops"])[0] == 200
    assert post(http_service, "Labels", asked, tokens["app"])[0] == 403
    assert post(http_service, "Labels", asked, tokens["analyst"])[0] == 403
    status, refused = post(http_service, "Labels", b"{}", tokens["queue"])
    assert (status, refused["code"]) == (400, "invalid_argument")
    assert refused["message"].startswith("request_ids:")
    reviews = json.dumps({"requestIds": ["req-1"], "labelSources": ["review"]}).encode()
    status, refused = post(http_service, "Labels", reviews, tokens["queue"])
    assert (status, refused["message"].split(":")[0]) == (400, "label_sources")


def test_labels_from_the_cli_one_json_line_per_label(http_service: FeedbackProcess) -> None:
    """hitl feedback labels prints the label that stands for each id that has one, says
    on stderr how many had one, and refuses a review source and a client's token."""
    with http_service.client("sidecar-1") as sidecar:
        sidecar.record_decisions([decision("req-1"), decision("req-2")])
    with http_service.client("app") as app:
        app.record(outcome_event("o-1", "req-1", "m", true_class=0))

    def hitl(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HITL_FEEDBACK_TOKEN": http_service.tokens[who]}
        command = hitl_command("feedback", "labels", *args, "--target", http_service.address)
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    read = hitl("ops", "req-2", "req-1")
    assert read.returncode == 0, read.stderr
    (label,) = (json.loads(line) for line in read.stdout.splitlines())
    assert (label["request_id"], label["class_index"], label["source"]) == ("req-1", 0, "outcome")
    assert read.stderr.strip() == "1 of 2 request ids have a label"
    from_stdin = subprocess.run(
        hitl_command("feedback", "labels", "-", "--target", http_service.address),
        input="req-1\n\nreq-2\n",
        capture_output=True,
        text=True,
        env={**os.environ, "HITL_FEEDBACK_TOKEN": http_service.tokens["queue"]},
        check=False,
    )
    assert from_stdin.stdout == read.stdout, from_stdin.stderr
    review = hitl("ops", "req-1", "--label-source", "review")
    assert review.returncode == 2
    assert "--label-source" in review.stderr
    assert "outcome, correction" in review.stderr
    denied = hitl("app", "req-1")
    assert denied.returncode == 1
    assert denied.stderr.startswith("hitl: PERMISSION_DENIED:")
    assert "Traceback" not in denied.stderr
