"""The loop's first half with real processes: a sidecar ships its decisions (every
escalated one, a sample of the automated) and RecordOutcome's outcomes to the
feedback service, which attributes every event to its decision long after the
sidecar forgot the request; an event about a request nobody decided yet is
dead-lettered after the join window and released once the decision arrives; a
sidecar SIGKILLed under load loses no escalated decision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.feedback.client import outcome_event
from sidecar.review.item import Verdict
from tests.artefacts import confident_logits
from tests.feedback_service import PRINCIPALS, FeedbackProcess, add_principals, start, stop
from tests.integration.conftest import (
    SidecarProcess,
    hitl_command,
    review_sink,
    start_review,
    start_sidecar,
    wait_for,
)
from tests.natsserver import NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture
def feedback(tmp_path: Path) -> Iterator[FeedbackProcess]:
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    tokens = add_principals(db, PRINCIPALS)
    (tmp_path / "sidecar.token").write_text(tokens["sidecar-1"])
    running = start(
        tmp_path / "feedback",
        db,
        tokens,
        "--join-window",
        "1",
        "--sweep-seconds",
        "0.2",
    )
    yield running
    running.process.kill()
    running.process.wait()


def start_with_feedback(
    workdir: Path, policy: Path, feedback: FeedbackProcess, *extra: str
) -> SidecarProcess:
    running = start_sidecar(
        workdir,
        policy,
        "--feedback",
        feedback.address,
        "--feedback-token-file",
        str(workdir / "sidecar.token"),
        *extra,
    )
    running.wait_serving()
    return running


def request(request_id: str, confident: bool) -> pb.RouteRequest:
    return route_request(request_id, "m", confident_logits(1, 8.0 if confident else 0.3))


def history(feedback: FeedbackProcess, request_id: str) -> fpb.RequestHistory:
    with feedback.client("ops") as ops:
        return ops.get(request_id)


def test_outcomes_long_after_the_sidecar_forgot_meet_their_decisions(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    sidecar = start_with_feedback(
        tmp_path, policy_file, feedback, "--decision-sample", "1", "--replay-ttl-seconds", "0.2"
    )
    try:
        with sidecar.client() as client:
            automated = client.route(request("auto-1", confident=True))
            escalated = client.route(request("esc-1", confident=False))
            assert automated.tier == dpb.TIER_AUTOMATED
            assert not automated.escalation_id
            assert escalated.escalation_id
            time.sleep(0.5)  # past the replay window: the sidecar no longer knows them
            for request_id, true_class in (("auto-1", 1), ("esc-1", 2)):
                answer = client.record_outcome(
                    pb.OutcomeRequest(request_id=request_id, model="m", true_class=true_class)
                )
                assert not answer.matched
        for request_id in ("auto-1", "esc-1"):
            wait_for(
                lambda r=request_id: len(history(feedback, r).events) == 1,
                10.0,
                f"{request_id}'s outcome at the feedback service",
            )
        auto, esc = history(feedback, "auto-1"), history(feedback, "esc-1")
        assert auto.decision.tier == dpb.TIER_AUTOMATED
        assert auto.decision.inclusion_probability == 1.0  # --decision-sample 1
        assert esc.decision.escalation_id == escalated.escalation_id
        assert esc.decision.inclusion_probability == 1.0
        for known in (auto, esc):
            assert known.decision_sender == "sidecar-1"
            assert known.decision.policy_revision == 1
            assert known.decision.calibration_version == "t-v1"
            labels = known.decision.labels  # the model's, added as the sidecar forwarded it
            assert len(labels) == len(known.decision.logits)
            assert labels[known.decision.predicted_class] == known.decision.predicted_label
            # The Route span's ids, which the feedback service's spans link to.
            assert (len(known.decision.trace_id), len(known.decision.span_id)) == (32, 16)
            (outcome,) = known.events
            assert outcome.event.type == fpb.FEEDBACK_OUTCOME
            assert outcome.sender == "sidecar-1"
        assert esc.events[0].event.label.class_index == 2
    finally:
        sidecar.process.kill()
        sidecar.process.wait()


def test_an_event_before_its_decision_is_dead_lettered_then_released(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    with feedback.client("app") as app:
        event = fpb.FeedbackEvent(
            feedback_id="early-1",
            request_id="late-1",
            model="m",
            type=fpb.FEEDBACK_RATING,
            rating=0.9,
        )
        assert app.record(event).status == fpb.RecordResult.ACCEPTED
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"

    def hitl(*args: str) -> subprocess.CompletedProcess[str]:
        command = hitl_command("feedback", *args, "--db", db)
        return subprocess.run(command, capture_output=True, text=True, check=True)

    def dead_lettered() -> bool:
        return bool(hitl("dead-letters").stdout.strip())

    wait_for(dead_lettered, 10.0, "the event dead-lettered")
    (letter,) = [json.loads(line) for line in hitl("dead-letters").stdout.splitlines()]
    assert letter["event"]["feedback_id"] == "early-1"
    assert "join window" in letter["reason"]
    assert json.loads(hitl("replay").stdout) == {"released": 0, "dead_letters": 1}

    sidecar = start_with_feedback(tmp_path, policy_file, feedback, "--decision-sample", "1")
    try:
        with sidecar.client() as client:
            client.route(request("late-1", confident=True))
        wait_for(lambda: history(feedback, "late-1").HasField("decision"), 10.0, "the decision")
    finally:
        sidecar.process.kill()
        sidecar.process.wait()
    assert json.loads(hitl("replay").stdout) == {"released": 1, "dead_letters": 0}
    assert hitl("dead-letters").stdout == ""


def kill_under_load(start_one: Callable[[], SidecarProcess]) -> list[str]:
    """Route escalations, SIGKILL the sidecar at the 150th; the request ids it
    acknowledged."""
    sidecar = start_one()
    acknowledged = []
    with sidecar.client() as client:
        for i in range(200):
            if i == 150:
                os.kill(sidecar.process.pid, signal.SIGKILL)
            try:
                answer = client.route(request(f"kill-{i}", confident=False), timeout=2)
            except Exception:  # the sidecar is gone: nothing more is acknowledged
                break
            acknowledged.append(answer.request_id)
    sidecar.process.wait()
    assert 100 <= len(acknowledged) <= 151
    return acknowledged


def all_decided(feedback: FeedbackProcess, acknowledged: list[str]) -> None:
    for request_id in (acknowledged[0], acknowledged[-1]):
        wait_for(
            lambda r=request_id: history(feedback, r).HasField("decision"),
            20.0,
            f"{request_id}'s decision",
        )
    assert [r for r in acknowledged if not history(feedback, r).HasField("decision")] == []


def test_a_killed_sidecar_loses_no_escalated_decision(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    """SIGKILL while routing escalations; on restart the spool still holds what was
    not delivered, and every acknowledged escalation's decision reaches the service."""
    args = ("--decision-sample", "0")
    acknowledged = kill_under_load(
        lambda: start_with_feedback(tmp_path, policy_file, feedback, *args)
    )
    again = start_with_feedback(tmp_path, policy_file, feedback)
    try:
        all_decided(feedback, acknowledged)
    finally:
        again.process.kill()
        again.process.wait()


def test_a_killed_sidecar_loses_no_escalated_decision_through_jetstream(
    tmp_path: Path, policy_file: Path
) -> None:
    """The same over a real NATS server: the sidecar publishes, the service consumes."""
    nats_server = NatsServer(tmp_path)
    nats_server.start()
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    service = start(
        tmp_path / "feedback", db, add_principals(db, PRINCIPALS), "--nats", nats_server.url
    )

    def sidecar() -> SidecarProcess:
        running = start_sidecar(tmp_path, policy_file, "--feedback", nats_server.url)
        running.wait_serving()
        return running

    again = None
    try:
        acknowledged = kill_under_load(sidecar)
        again = sidecar()
        all_decided(service, acknowledged)
    finally:
        for process in (service.process, *([again.process] if again else [])):
            process.kill()
            process.wait()
        nats_server.stop()


def test_a_dataset_built_from_the_log_fits_a_calibrator_and_rebuilds_identically(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    """Decisions from a sidecar, outcomes through RecordOutcome, reviews from the
    queue's principal: one dataset, its manifest, an identical rebuild, a fit."""
    sidecar = start_with_feedback(tmp_path, policy_file, feedback, "--decision-sample", "1")
    try:
        with sidecar.client() as client:
            for i in range(40):
                client.route(request(f"ds-{i}", confident=i % 2 == 0))
            for i in range(0, 40, 2):
                client.record_outcome(
                    pb.OutcomeRequest(request_id=f"ds-{i}", model="m", true_class=i % 3)
                )
        with feedback.client("queue") as queue:
            reviews = [
                fpb.FeedbackEvent(
                    feedback_id=f"rev-{i}",
                    request_id=f"ds-{i}",
                    model="m",
                    type=fpb.FEEDBACK_REVIEW,
                    label=fpb.Label(class_index=(i + 1) % 3),
                )
                for i in range(1, 40, 2)
            ]
            assert {r.status for r in queue.record_batch(reviews)} == {fpb.RecordResult.ACCEPTED}
        wait_for(lambda: len(history(feedback, "ds-38").events) == 1, 10.0, "the last outcome")
    finally:
        sidecar.process.kill()
        sidecar.process.wait()
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    out = tmp_path / "datasets"

    def hitl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(hitl_command(*args), capture_output=True, text=True, check=False)

    until = str(time.time())
    built = hitl("feedback", "dataset", "build", "--model", "m", "--until", until,
                 "--out", str(out), "--db", db)  # fmt: skip
    assert built.returncode == 0, built.stderr
    manifest = json.loads(built.stdout)
    assert manifest["rows"] == 40
    assert manifest["per_label_source"] == {"outcome": 20, "review": 20}
    assert manifest["per_tier"]["AUTOMATED"] == 20
    assert manifest["weights"]["sum"] == 40.0  # --decision-sample 1: every weight is 1
    data = out / f"{manifest['id']}.jsonl"
    assert data.exists()
    shown = hitl("feedback", "dataset", "show", manifest["id"], "--out", str(out))
    assert json.loads(shown.stdout) == manifest
    rebuilt = hitl("feedback", "dataset", "rebuild", str(out / f"{manifest['id']}.manifest.json"),
                   "--db", db)  # fmt: skip
    assert json.loads(rebuilt.stdout)["identical"] is True
    (tmp_path / "analyst.token").write_text(feedback.tokens["analyst"])
    exported = hitl("feedback", "export", "--model", "m", "--until", until,
                    "--out", str(tmp_path / "exported"), "--target", feedback.address,
                    "--token-file", str(tmp_path / "analyst.token"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == manifest
    assert (tmp_path / "exported" / data.name).read_bytes() == data.read_bytes()
    fit = tmp_path / "fit.json"
    fitted = hitl(
        "calibrate", "fit", "--data", str(data), "--method", "temperature", "--out", str(fit)
    )
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads(fit.read_text())["method"] == "temperature"


def test_a_reviewers_verdict_meets_its_decision_at_the_feedback_service(
    tmp_path: Path, policy_file: Path, feedback: FeedbackProcess
) -> None:
    """Route -> escalation to the queue and decision to the service -> a reviewer
    resolves -> the queue sends the REVIEW event, attributed to the decision."""
    (tmp_path / "queue.token").write_text(feedback.tokens["queue"])
    queue = start_review(
        tmp_path / "review",
        "--feedback",
        feedback.address,
        "--feedback-token-file",
        str(tmp_path / "queue.token"),
    )
    sidecar = start_with_feedback(
        tmp_path,
        policy_file,
        feedback,
        *review_sink(tmp_path / "review", int(queue.address.rpartition(":")[2])),
    )
    try:
        with sidecar.client() as client:
            escalated = client.route(request("rev-1", confident=False))
        with queue.client("viewer") as viewer:
            wait_for(lambda: bool(viewer.list_items()), 10.0, "the escalation in the queue")
        with queue.client("alice") as alice:
            item = alice.claim()
            assert item.escalation_id == escalated.escalation_id
            alice.resolve(item.escalation_id, Verdict.OVERRIDE, corrected_class=0)
        wait_for(lambda: len(history(feedback, "rev-1").events) == 1, 10.0, "the review event")
        known = history(feedback, "rev-1")
        assert known.decision.escalation_id == escalated.escalation_id
        (review,) = known.events
        assert review.sender == "queue"
        assert review.event.type == fpb.FEEDBACK_REVIEW
        assert review.event.label.class_index == 0
        assert review.event.user_context["reviewer"] == "alice"
        assert review.event.user_context["verdict"] == "OVERRIDE"
    finally:
        for process in (sidecar.process, queue.process):
            process.kill()
            process.wait()


def test_decisions_and_outcomes_through_jetstream(tmp_path: Path, policy_file: Path) -> None:
    """The sidecar sends to a real NATS server's JetStream; the feedback service, started
    after the sidecar has sent, takes them with its durable consumer and attributes the
    outcome to its decision; a restarted service takes nothing twice."""
    nats_server = NatsServer(tmp_path)
    nats_server.start()
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    tokens = add_principals(db, PRINCIPALS)
    sidecar = start_sidecar(
        tmp_path, policy_file, "--feedback", nats_server.url, "--decision-sample", "1"
    )
    service = None
    try:
        sidecar.wait_serving()
        with sidecar.client() as client:
            client.route(request("js-auto", confident=True))
            client.route(request("js-esc", confident=False))
            client.record_outcome(pb.OutcomeRequest(request_id="js-auto", model="m", true_class=1))
        stream = "HITL_DEFAULT_FEEDBACK"

        def sent() -> bool:
            try:
                return len(nats_server.messages(stream)) == 3
            except Exception:  # the stream is not there yet
                return False

        wait_for(sent, 10.0, "3 messages on the stream")
        running = service = start(tmp_path / "feedback", db, tokens, "--nats", nats_server.url)

        def attributed() -> bool:
            known = history(running, "js-auto")
            return known.HasField("decision") and len(known.events) == 1

        wait_for(attributed, 15.0, "the outcome attributed through JetStream")
        escalated = history(running, "js-esc").decision
        assert escalated.tier != dpb.TIER_AUTOMATED
        assert escalated.labels[escalated.predicted_class] == escalated.predicted_label
        assert history(running, "js-auto").decision_sender == f"nats:{stream}"
        stop(running, tmp_path / "feedback")
        running = service = start(tmp_path / "feedback", db, tokens, "--nats", nats_server.url)
        time.sleep(1.5)  # a redelivery would show as a second event or a conflict
        assert len(history(running, "js-auto").events) == 1
    finally:
        for process in (sidecar.process, *([service.process] if service else [])):
            process.kill()
            process.wait()
        nats_server.stop()


def test_new_labels_trigger_a_model_update_announced_on_jetstream(tmp_path: Path) -> None:
    """Two newly labelled decisions (--trigger-rows 2): a dataset snapshot is written and
    announced on HITL_MODEL_UPDATES, naming it."""
    nats_server = NatsServer(tmp_path)
    nats_server.start()
    db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    datasets = tmp_path / "datasets"
    service = start(
        tmp_path / "feedback", db, add_principals(db, PRINCIPALS),
        "--nats", nats_server.url, "--trigger-rows", "2", "--sweep-seconds", "0.2",
        "--datasets", str(datasets),
    )  # fmt: skip
    try:
        decided = [
            fpb.DecisionRecord(
                request_id=f"u-{i}", model="m", tier=dpb.TIER_HUMAN_ASSISTED,
                reason=dpb.REASON_THRESHOLD, predicted_class=1, calibrated_confidence=0.7,
                logits=[0.1, 1.0, 0.2], policy_revision=1, decided_at=time.time(),
                inclusion_probability=1.0,
            )
            for i in range(2)
        ]  # fmt: skip
        with service.client("sidecar-1") as sidecar:
            sidecar.record_decisions(decided)
            for i in range(2):
                sidecar.record(outcome_event(f"o-{i}", f"u-{i}", "m", true_class=i))

        def announced() -> list[dict[str, Any]]:
            try:
                return nats_server.messages("HITL_MODEL_UPDATES")
            except Exception:  # no stream yet
                return []

        wait_for(announced, 10.0, "a model update on HITL_MODEL_UPDATES")
        (update,) = announced()
        assert (update["model"], update["rows"], update["new_labels"]) == ("m", 2, 2)
        assert (datasets / f"{update['dataset']}.jsonl").exists()
    finally:
        service.process.kill()
        service.process.wait()
        nats_server.stop()


def test_the_decision_stream_waits_in_its_spool_while_the_service_is_down(
    tmp_path: Path, policy_file: Path
) -> None:
    """No feedback service listening: the sampled decision and the outcome wait in the
    decisions spool, which hitl escalations --decisions reports."""
    sidecar = start_sidecar(
        tmp_path, policy_file, "--feedback", "127.0.0.1:1", "--decision-sample", "1"
    )
    try:
        sidecar.wait_serving()
        with sidecar.client() as client:
            client.route(request("down-1", confident=True))
            client.record_outcome(pb.OutcomeRequest(request_id="down-1", model="m", true_class=1))
        status = subprocess.run(
            hitl_command(
                "escalations", "status", "--decisions", "--state-dir", str(tmp_path / "state")
            ),
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(status.stdout)
        assert (report["undelivered"], report["dead_letters"]) == (2, 0)
    finally:
        sidecar.process.kill()
        sidecar.process.wait()
