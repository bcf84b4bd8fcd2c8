"""Label Studio as a review backend, against a real Label Studio server (installed
from PyPI in its own virtual environment, started once per session on a loopback
port with SQLite): the sink makes tasks with pre-annotations and never makes one
twice, annotations come back as resolutions at a real feedback service (through
the webhook, or the poll when the webhook was lost), an annotation updated after it
was sent is corrected at the service (its label retracted, the new one sent), forged
webhooks are refused, and annotations that cannot be trusted or resolved are refused
and counted."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from label_studio_sdk import LabelStudio as LabelStudioClient
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.core.labelstudio import ConfigNames
from sidecar.errors import ConfigError, SinkUnavailable
from sidecar.escalation.record import Escalation
from sidecar.escalation.sinks import Rejection, Spooled, open_sink
from sidecar.feedback.store import open_store as open_feedback_store
from sidecar.labelstudio.app import BridgeServer, build
from sidecar.labelstudio.config import LabelStudioConfig
from tests import feedback_service
from tests import labelstudio_server as ls
from tests.artefacts import policy_doc, temperature_artefact, write_policy
from tests.escalations import escalation
from tests.integration.conftest import hitl_command, start_sidecar, wait_for
from tests.integration.test_escalation_delivery import drained, route_escalations
from tests.ports import free_port
from tests.unit.review.conftest import points

pytestmark = pytest.mark.integration

LABELS = ("a", "b", "c")
SECRET = "webhook-secret-for-the-tests-0123456789"  # noqa: S105 (a test's)
REVIEWER = ("bob@example.com", "bob-reviewer")
NAMES = ConfigNames("text", "label", "input")  # of the projects the sink makes


@dataclass
class Studio:
    server: ls.LabelStudio
    client: LabelStudioClient
    users: dict[str, int]  # by e-mail
    token_file: Path

    @property
    def sink_url(self) -> str:
        return self.server.url.replace("http://", "labelstudio://")


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """One Label Studio for the session, with a mapped reviewer (bob) and a user
    nobody mapped (eve); skipped, saying why, where Label Studio cannot run."""
    workdir = tmp_path_factory.mktemp("labelstudio")
    try:
        server = ls.start(workdir / "data", workdir / "labelstudio.log")
    except ls.LabelStudioUnavailable as exc:
        pytest.skip(f"Label Studio cannot start here: {exc}")
    try:
        with httpx.Client(timeout=60) as http:
            yield from _prepared(server, http, workdir)
    finally:
        server.stop()


def _prepared(server: ls.LabelStudio, http: httpx.Client, workdir: Path) -> Iterator[Studio]:
    client = LabelStudioClient(  # type: ignore[no-untyped-call]
        base_url=server.url, api_key=ls.TOKEN, httpx_client=http
    )
    users = {ls.ADMIN: int(client.users.whoami().id)}
    for name in ("bob", "eve"):
        made = client.users.create(
            username=name, email=f"{name}@example.com", password=f"{name}-password-123"
        )
        users[f"{name}@example.com"] = int(made.id or 0)
    token_file = workdir / "labelstudio.token"
    token_file.write_text(ls.TOKEN)
    yield Studio(server, client, users, token_file)


@pytest.fixture(scope="module")
def feedback_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The feedback service's database, for a test to read what it keeps."""
    return f"sqlite:{tmp_path_factory.mktemp('feedback') / 'feedback.db'}"


@pytest.fixture(scope="module")
def feedback(feedback_db: str) -> Iterator[feedback_service.FeedbackProcess]:
    """A real feedback service; the bridge sends as "queue" (role review)."""
    db = feedback_db
    workdir = Path(db.removeprefix("sqlite:")).parent
    tokens = feedback_service.add_principals(db, feedback_service.PRINCIPALS)
    running = feedback_service.start(workdir, db, tokens)
    yield running
    feedback_service.stop(running, workdir)


def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def record(model: str, escalation_id: str = "", **fields: Any) -> Escalation:
    escalation_id = escalation_id or f"esc-{uuid.uuid4().hex[:12]}"
    return escalation(escalation_id, model=model, created_at=time.time(), **fields)


def spooled(items: Sequence[Escalation]) -> list[Spooled]:
    return [
        Spooled(orjson.dumps(e.to_dict()), json.loads(orjson.dumps(e.to_dict())), e.escalation_id)
        for e in items
    ]


def labels_of(model: str, revision: int) -> tuple[str, ...]:
    return LABELS


def deliver(
    studio: Studio,
    monkeypatch: pytest.MonkeyPatch,
    *batches: Sequence[Escalation],
    **env: str,
) -> list[list[Rejection]]:
    """Deliver batches, one after the other, through the sidecar's sink as open_sink
    builds it from HITL_SINK and the environment (env on top); what it refused of each."""
    monkeypatch.setenv("HITL_LABELSTUDIO_TOKEN_FILE", str(studio.token_file))
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    async def run() -> list[list[Rejection]]:
        made = open_sink(studio.sink_url, "default", 10.0, None, labels_of)
        try:
            return [await made.deliver(spooled(batch)) for batch in batches]
        finally:
            await made.close()

    return asyncio.run(run())


def project_of(studio: Studio, model: str) -> int:
    projects: list[Any] = list(studio.client.projects.list(title=f"hitl: {model}"))
    found = [p for p in projects if p.id]
    assert len(found) == 1, found
    return int(found[0].id or 0)


def tasks_of(studio: Studio, project: int) -> list[Any]:
    return list(studio.client.tasks.list(project=project, fields="all"))


def send_escalations(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, items: Sequence[Escalation]
) -> int:
    assert deliver(studio, monkeypatch, items) == [[]]
    return project_of(studio, items[0].model)


@contextmanager
def bridge(
    studio: Studio,
    tmp_path: Path,
    feedback: feedback_service.FeedbackProcess | None,
    listen: str = "127.0.0.1:0",
    **settings: Any,
) -> Iterator[tuple[BridgeServer, InMemoryMetricReader]]:
    """The bridge in this process, on tmp_path's store, reviewers bob -> bob-reviewer."""
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET)
    values: dict[str, Any] = {
        "url": studio.sink_url,
        "token_file": str(studio.token_file),
        "webhook_secret_file": str(secret_file),
        "reviewers": f"{REVIEWER[0]}={REVIEWER[1]}",
        "listen": listen,
        "db": f"sqlite:{tmp_path / 'bridge.db'}",
        "poll_seconds": "3600",  # once at start; a test polls when it means to
        "sweep_seconds": "3600",
    }
    if feedback is not None:
        token = tmp_path / "queue.token"
        token.write_text(feedback.tokens["queue"])
        values |= {"feedback": feedback.address, "feedback_token_file": str(token)}
    values |= settings
    config = LabelStudioConfig.load(values, env={})
    running = build(config, metric_readers=[reader := InMemoryMetricReader()])
    running.start()
    try:
        yield running, reader
    finally:
        running.stop()


def add_webhook(studio: Studio, project: int, address: str, secret: str = SECRET) -> None:
    studio.client.webhooks.create(
        url=f"http://{address}/webhook",
        headers={"Authorization": f"Bearer {secret}"},
        actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
        project=project,
        send_payload=True,
    )


def choice(label: str) -> list[dict[str, Any]]:
    """An annotation's result choosing label."""
    return [
        {"from_name": "label", "to_name": "input", "type": "choices", "value": {"choices": [label]}}
    ]


def annotate(studio: Studio, task_id: int, label: str, user: str, lead_time: float = 42.5) -> int:
    made = studio.client.annotations.create(
        task_id, result=choice(label), lead_time=lead_time, completed_by=studio.users[user]
    )
    return int(made.id or 0)


def task_id_of(studio: Studio, project: int, escalation_id: str) -> int:
    found = [t for t in tasks_of(studio, project) if t.data["escalation_id"] == escalation_id]
    assert len(found) == 1
    return int(found[0].id)


def events_about(
    feedback: feedback_service.FeedbackProcess, request_id: str
) -> list[fpb.ReceivedEvent]:
    with feedback.client("ops") as client:
        return list(client.get(request_id).events)


def review_events(
    feedback: feedback_service.FeedbackProcess, request_id: str
) -> list[fpb.ReceivedEvent]:
    return [e for e in events_about(feedback, request_id) if e.event.type == fpb.FEEDBACK_REVIEW]


def wait_for_review(
    feedback: feedback_service.FeedbackProcess, request_id: str, timeout: float = 30.0
) -> fpb.ReceivedEvent:
    wait_for(lambda: review_events(feedback, request_id), timeout, f"a REVIEW of {request_id}")
    (event,) = review_events(feedback, request_id)
    return event


# -- the sink ------------------------------------------------------------------------


def test_escalations_become_tasks_with_predictions(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each escalation is a task of its model's project (made on first use, with a
    config over its labels) holding the input, tier, reason, rule and escalation id,
    and the model's label as a prediction scored by its calibrated confidence; a
    fallback without a prediction has none."""
    model = model_name()
    decided = record(model, tier="HUMAN_PRIMARY", reason="RULE", rule_id="large-amount")
    fallback = record(
        model, predicted_class=-1, predicted_label="", reason="FALLBACK_NO_POLICY",
        calibrated_confidence=math.nan, degraded=True,
    )  # fmt: skip
    project = send_escalations(studio, monkeypatch, [decided, fallback])
    config = studio.client.projects.get(project).parsed_label_config or {}
    assert config["label"]["labels"] == list(LABELS)
    tasks = {t.data["escalation_id"]: t for t in tasks_of(studio, project)}
    assert tasks.keys() == {decided.escalation_id, fallback.escalation_id}
    data = tasks[decided.escalation_id].data
    assert data["text"] == decided.input_ref
    assert (data["tier"], data["reason"], data["rule_id"]) == (
        "HUMAN_PRIMARY",
        "RULE",
        "large-amount",
    )
    assert data["priority"] == 0
    (prediction,) = tasks[decided.escalation_id].predictions
    assert prediction.score == pytest.approx(decided.calibrated_confidence)
    assert prediction.result[0]["value"] == {"choices": [decided.predicted_label]}
    assert tasks[fallback.escalation_id].predictions == []


def test_a_sidecar_process_sends_its_escalations_to_label_studio(
    studio: Studio, tmp_path: Path
) -> None:
    """HITL_SINK=labelstudio://...: a sidecar started from the command line turns each
    escalation it routes into one task, with the model's prediction, in the project it
    makes for the model; the API token is in no log line."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    policy = tmp_path / "policy.yaml"
    write_policy(policy, policy_doc(sha))  # model "m"
    prefix = f"hitl {uuid.uuid4().hex[:8]}: "
    env = {
        "HITL_LABELSTUDIO_TOKEN_FILE": str(studio.token_file),
        "HITL_LABELSTUDIO_PROJECT_PREFIX": prefix,
        "HITL_FORWARD_MAX_BACKOFF_SECONDS": "1.5",
    }
    running = start_sidecar(tmp_path, policy, "--sink", studio.sink_url, env=env)
    try:
        running.wait_serving()
        ids = route_escalations(running, "ls", 3)
        drained(running)
    finally:
        assert running.stop() == 0
    projects: list[Any] = list(studio.client.projects.list(title=f"{prefix}m"))
    (project,) = [p for p in projects if p.id]
    tasks = tasks_of(studio, int(project.id))
    assert sorted(task.data["escalation_id"] for task in tasks) == sorted(ids)
    assert all(len(task.predictions) == 1 for task in tasks)
    token = studio.token_file.read_text().strip()
    assert token not in (tmp_path / "sidecar.log").read_text()


def test_a_project_deleted_in_label_studio_is_made_again(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink keeps the project it found; deleted in Label Studio, the next delivery
    fails (the batch stays in the spool) and the one after makes the project again."""
    model = model_name()
    first, second = record(model), record(model)
    monkeypatch.setenv("HITL_LABELSTUDIO_TOKEN_FILE", str(studio.token_file))

    async def run() -> None:
        made = open_sink(studio.sink_url, "default", 10.0, None, labels_of)
        try:
            assert await made.deliver(spooled([first])) == []
            studio.client.projects.delete(project_of(studio, model))
            with pytest.raises(SinkUnavailable):
                await made.deliver(spooled([second]))
            assert await made.deliver(spooled([second])) == []
        finally:
            await made.close()

    asyncio.run(run())
    tasks = tasks_of(studio, project_of(studio, model))
    assert [task.data["escalation_id"] for task in tasks] == [second.escalation_id]


def test_a_resent_batch_makes_no_second_task(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch sent again (after a lost answer) with one new escalation adds only the new one."""
    model = model_name()
    first, second, third = (record(model) for _ in range(3))
    assert deliver(studio, monkeypatch, [first, second], [first, second, third]) == [[], []]
    assert deliver(studio, monkeypatch, [first]) == [[]]  # a restarted sidecar's resend
    project = project_of(studio, model)
    ids = sorted(t.data["escalation_id"] for t in tasks_of(studio, project))
    assert ids == sorted(e.escalation_id for e in (first, second, third))


def test_the_bridge_deletes_a_second_task_of_one_escalation(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A task made for an escalation that already has one (an import the sink gave up on
    that landed after all) is deleted by the bridge, and counted; the first stays."""
    model = model_name()
    item = record(model)
    project = send_escalations(studio, monkeypatch, [item])
    (first,) = tasks_of(studio, project)
    again: list[Any] = [{"data": first.data}]
    studio.client.projects.import_tasks(project, request=again)
    assert len(tasks_of(studio, project)) == 2
    with bridge(studio, tmp_path, None) as (running, reader):
        running.bridge.poll()
        assert [t.id for t in tasks_of(studio, project)] == [first.id]
        assert points(reader, "hitl.labelstudio.duplicates") == {frozenset(): 1}


def test_a_configured_project_is_used_and_its_config_read(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HITL_LABELSTUDIO_PROJECTS names the project, the input goes where its config
    reads it, and a model it does not name is refused."""
    model = model_name()
    config = (
        '<View><Image name="photo" value="$image"/>'
        '<Choices name="verdict" toName="photo"><Choice value="a"/><Choice value="b"/>'
        '<Choice value="c"/></Choices></View>'
    )
    made = studio.client.projects.create(title=f"existing {model}", label_config=config)
    item = record(model, input_ref="https://inputs.example/1.png")
    stray = record(model_name())
    projects = f"{model}={made.id}"
    (refused,) = deliver(studio, monkeypatch, [item, stray], HITL_LABELSTUDIO_PROJECTS=projects)
    assert [r.key for r in refused] == [stray.escalation_id]  # its model has no project
    assert "HITL_LABELSTUDIO_PROJECTS" in refused[0].reason
    (task,) = tasks_of(studio, int(made.id or 0))
    assert task.data["image"] == "https://inputs.example/1.png"
    assert task.predictions[0].result[0]["from_name"] == "verdict"


# -- the return path -------------------------------------------------------------------


def test_an_annotation_arrives_as_a_resolution(
    studio: Studio,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    feedback: feedback_service.FeedbackProcess,
) -> None:
    """An annotation made through Label Studio's API reaches the feedback service by the
    webhook, with the mapped reviewer, the label's class, OVERRIDE or ACCEPT, and the
    lead time as its time to label."""
    model = model_name()
    overridden, accepted = record(model), record(model)
    project = send_escalations(studio, monkeypatch, [overridden, accepted])
    with bridge(studio, tmp_path, feedback) as (running, reader):
        add_webhook(studio, project, running.address)
        annotate(studio, task_id_of(studio, project, overridden.escalation_id), "c", REVIEWER[0])
        annotate(studio, task_id_of(studio, project, accepted.escalation_id), "b", REVIEWER[0], 7.0)
        received = wait_for_review(feedback, overridden.request_id)
        event = received.event
        assert received.sender == "queue"
        assert (event.label.name, event.label.class_index) == ("c", 2)
        assert event.feedback_id == f"review-{overridden.escalation_id}"
        assert event.source == "labelstudio"
        context = dict(event.user_context)
        assert context["reviewer"] == REVIEWER[1]
        assert context["verdict"] == "OVERRIDE"
        assert float(context["time_to_label_seconds"]) == pytest.approx(42.5)
        other = wait_for_review(feedback, accepted.request_id).event
        assert other.user_context["verdict"] == "ACCEPT"
        assert float(other.user_context["time_to_label_seconds"]) == pytest.approx(7.0)
        webhooks = points(reader, "hitl.labelstudio.webhooks")
        assert webhooks[frozenset({("outcome", "ok")})] == 2  # the poll ran before them


def test_an_annotation_updated_after_it_was_sent_corrects_the_label(
    studio: Studio,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    feedback: feedback_service.FeedbackProcess,
    feedback_db: str,
) -> None:
    """The reviewer changes the label in Label Studio after the first was sent: the
    service gets the retraction of the first, then the second naming the one it
    supersedes, and only the second stands as the request's label."""
    model = model_name()
    item = record(model)
    project = send_escalations(studio, monkeypatch, [item])
    with bridge(studio, tmp_path, feedback) as (running, reader):
        add_webhook(studio, project, running.address)
        task_id = task_id_of(studio, project, item.escalation_id)
        annotation = annotate(studio, task_id, "c", REVIEWER[0])
        wait_for_review(feedback, item.request_id)  # the first, sent
        studio.client.annotations.update(annotation, result=choice("a"))
        wait_for(
            lambda: len(events_about(feedback, item.request_id)) == 3,
            30.0,
            "the retraction and the corrected review",
        )
        results = points(reader, "hitl.labelstudio.annotations")
        assert results[frozenset({("result", "corrected")})] == 1
    first, retraction, second = (e.event for e in events_about(feedback, item.request_id))
    assert (first.feedback_id, first.label.name) == (f"review-{item.escalation_id}", "c")
    assert retraction.type == fpb.FEEDBACK_RETRACTION
    assert retraction.feedback_id == f"{first.feedback_id}-retracted"
    assert (retraction.retracts, retraction.source) == (first.feedback_id, "labelstudio")
    assert retraction.user_context["reverted_by"] == REVIEWER[1]
    assert second.feedback_id == f"review-{item.escalation_id}-2"
    assert (second.label.name, second.label.class_index) == ("a", 0)
    assert second.user_context["supersedes"] == first.feedback_id
    assert second.user_context["verdict"] == "OVERRIDE"
    store = open_feedback_store(feedback_db)
    try:
        standing = [e.feedback_id for e in store.labels_about([item.request_id])]
    finally:
        store.close()
    assert standing == [second.feedback_id]


def test_a_webhook_lost_while_the_bridge_was_down_is_recovered_by_polling(
    studio: Studio,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    feedback: feedback_service.FeedbackProcess,
) -> None:
    """The receiver is down when the reviewer labels: the webhook fails, and the
    bridge's poll finds the annotation when it is back."""
    model = model_name()
    item = record(model)
    project = send_escalations(studio, monkeypatch, [item])
    listen = f"127.0.0.1:{free_port()}"
    with bridge(studio, tmp_path, feedback, listen=listen) as (running, _):
        add_webhook(studio, project, running.address)
        running.bridge.poll()  # tracks the task
    annotate(studio, task_id_of(studio, project, item.escalation_id), "a", REVIEWER[0])
    assert review_events(feedback, item.request_id) == []
    with bridge(studio, tmp_path, feedback, listen=listen):  # polls at start
        event = wait_for_review(feedback, item.request_id).event
    assert (event.label.name, event.user_context["verdict"]) == ("a", "OVERRIDE")


def post_webhook(address: str, body: dict[str, Any], authorization: str | None) -> int:
    request = urllib.request.Request(
        f"http://{address}/webhook", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_a_forged_webhook_is_refused(studio: Studio, tmp_path: Path) -> None:
    """No bearer secret: 401; a wrong one: 403; each counted, nothing acted on."""
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 1}}
    with bridge(studio, tmp_path, None) as (running, reader):
        assert post_webhook(running.address, body, None) == 401
        assert post_webhook(running.address, body, "Token " + SECRET) == 401
        assert post_webhook(running.address, body, "Bearer not-the-secret") == 403
        assert post_webhook(running.address, body, f"Bearer {SECRET}x") == 403
        counted = points(reader, "hitl.labelstudio.webhooks")
        assert counted[frozenset({("outcome", "unauthenticated")})] == 2
        assert counted[frozenset({("outcome", "forbidden")})] == 2
        assert points(reader, "hitl.labelstudio.refused") == {}


def test_untrusted_or_unresolvable_annotations_are_refused_and_counted(
    studio: Studio,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    feedback: feedback_service.FeedbackProcess,
) -> None:
    """A user nobody mapped, a label outside the model's list and a task the sink did
    not make give no resolution; each is counted once, however often it is read."""
    model = model_name()
    by_stranger, off_list = record(model), record(model)
    project = send_escalations(studio, monkeypatch, [by_stranger, off_list])
    stray = studio.client.projects.create(
        title=f"not hitl {model}",
        label_config=studio.client.projects.get(project).label_config,
    )
    stray_tasks: list[Any] = [{"data": {"text": "x"}}]
    studio.client.projects.import_tasks(int(stray.id or 0), request=stray_tasks)
    (stray_task,) = tasks_of(studio, int(stray.id or 0))
    metrics_port = free_port()
    scraped = {"metrics_addr": f"127.0.0.1:{metrics_port}"}
    with bridge(studio, tmp_path, feedback, **scraped) as (running, reader):
        add_webhook(studio, project, running.address)
        add_webhook(studio, int(stray.id or 0), running.address)
        annotate(
            studio, task_id_of(studio, project, by_stranger.escalation_id), "a", "eve@example.com"
        )
        annotate(studio, task_id_of(studio, project, off_list.escalation_id), "zebra", REVIEWER[0])
        stray_annotation = annotate(studio, int(stray_task.id), "a", REVIEWER[0])
        # A webhook pairing a tracked task with another task's annotation is refused.
        off_list_task = task_id_of(studio, project, off_list.escalation_id)
        assert running.bridge.on_webhook(off_list_task, stray_annotation) == "refused: unknown_task"
        running.bridge.poll()  # reads them all again: counted once
        refused = points(reader, "hitl.labelstudio.refused")
        assert refused == {
            frozenset({("reason", "unmapped_reviewer")}): 1,
            frozenset({("reason", "label_outside_list")}): 1,
            frozenset({("reason", "unknown_task")}): 1,
        }
        # the name k8s/monitoring/alerts.yaml uses
        assert sample(scrape(metrics_port), "hitl_labelstudio_refused_total", "unmapped_reviewer")
        assert running.outbox is not None
        running.outbox.send()
    assert review_events(feedback, by_stranger.request_id) == []
    assert review_events(feedback, off_list.request_id) == []


def test_a_task_deleted_in_label_studio_is_forgotten(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tracked task someone deleted in Label Studio stops being tracked; the poll and
    the sweep go on with the others."""
    model = model_name()
    deleted, kept = record(model), record(model)
    project = send_escalations(studio, monkeypatch, [deleted, kept])
    only = {"projects": f"{model}={project}"}
    with bridge(studio, tmp_path, None, **only) as (running, _):
        running.bridge.poll()
        gone = task_id_of(studio, project, deleted.escalation_id)
        studio.client.tasks.delete(str(gone))
        kept_id = task_id_of(studio, project, kept.escalation_id)
        annotate(studio, kept_id, "b", REVIEWER[0])
        running.bridge.poll()
        assert running.bridge.store.task(gone) is None
        resolved = running.bridge.store.task(kept_id)
        assert resolved is not None
        assert resolved.resolution is not None
        running.bridge.sweep()


# -- the SLA ---------------------------------------------------------------------------


def test_overdue_tasks_are_raised_in_label_studio(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A task past its tier's deadline is raised a level: counted, and its data in
    Label Studio shows the level, the new deadline and priority 0."""
    model = model_name()
    item = record(model, tier="HUMAN_ASSISTED")
    project = send_escalations(studio, monkeypatch, [item])
    metrics_port = free_port()
    only = {
        "projects": f"{model}={project}",
        "sla": "HUMAN_ASSISTED=1",
        "metrics_addr": f"127.0.0.1:{metrics_port}",
    }
    with bridge(studio, tmp_path, None, **only) as (running, reader):
        running.bridge.poll()
        time.sleep(1.5)
        assert running.bridge.sweep() == 1
        (task,) = tasks_of(studio, project)
        assert task.data["escalation_level"] == 1
        assert task.data["priority"] == 0
        assert task.data["due_at"].endswith("+00:00")
        overdue = points(reader, "hitl.labelstudio.overdue")
        assert overdue == {frozenset({("tier", "HUMAN_ASSISTED")}): 1}
        items = points(reader, "hitl.labelstudio.items")
        assert items[frozenset({("tier", "HUMAN_ASSISTED")})] == 1
        # The names k8s/monitoring/alerts.yaml and its runbooks use.
        exported = scrape(metrics_port)
        assert sample(exported, "hitl_labelstudio_overdue_total", "HUMAN_ASSISTED") == 1
        assert sample(exported, "hitl_labelstudio_items", "HUMAN_ASSISTED") == 1


def scrape(port: int) -> str:
    """The bridge's Prometheus page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


def sample(page: str, name: str, label_value: str) -> float:
    """The value of name's sample with a label of label_value on a Prometheus page."""
    for line in page.splitlines():
        if line.startswith(name + "{") and f'="{label_value}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} sample labelled {label_value!r}")


# -- the labeling config helper ----------------------------------------------------------


def test_the_config_helper_writes_a_config_label_studio_accepts(
    studio: Studio, tmp_path: Path
) -> None:
    """``hitl labelstudio config`` writes a classification config over the policy's
    labels that Label Studio takes, and the sink reads back."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    policy = tmp_path / "policy.yaml"
    write_policy(policy, policy_doc(sha, labels=["cat", "dog", "bird"]))
    made = subprocess.run(
        hitl_command("labelstudio", "config", "--policy", str(policy), "--model", "m"),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    project = studio.client.projects.create(
        title=f"helper {uuid.uuid4().hex[:6]}", label_config=made.stdout
    )
    parsed = studio.client.projects.get(int(project.id or 0)).parsed_label_config or {}
    assert parsed["label"]["labels"] == ["cat", "dog", "bird"]
    missing = subprocess.run(
        hitl_command("labelstudio", "config", "--policy", str(policy), "--model", "nope"),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "--model" in missing.stderr


def test_settings_fail_at_start_naming_the_variable(tmp_path: Path) -> None:
    """A URL of another scheme, or a bridge without its webhook secret, fails at start-up."""
    with pytest.raises(ConfigError, match="HITL_LABELSTUDIO_URL"):
        LabelStudioConfig.load({"url": "http://127.0.0.1:1"}, env={})
    token = tmp_path / "token"
    token.write_text("x")
    only_token = {"url": "labelstudio://127.0.0.1:1", "token_file": str(token)}
    with pytest.raises(ConfigError, match="HITL_LABELSTUDIO_WEBHOOK_SECRET_FILE"):
        LabelStudioConfig.load(only_token, env={})
