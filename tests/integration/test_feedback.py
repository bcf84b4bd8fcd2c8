"""The feedback service as a process, on SQLite and PostgreSQL: principals made with
its CLI, events recorded over gRPC under the sender's credential, idempotent by
feedback_id, refused with the field named, a request's history read back, and
everything still there after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.client import FeedbackClient, outcome_event
from sidecar.feedback.stubs.feedback_connect import FeedbackClientSync
from tests.feedback_service import PRINCIPALS, FeedbackProcess, add_principals, start, stop
from tests.integration.conftest import hitl_command
from tests.postgres import dsn_for, fresh_schema

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'feedback.db'}"
    else:
        with fresh_schema() as schema:
            yield dsn_for(schema)


@pytest.fixture
def service(tmp_path: Path, database: str) -> Iterator[FeedbackProcess]:
    running = start(tmp_path, database, add_principals(database, PRINCIPALS))
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.Call)
    return call.code()


def test_events_are_kept_under_their_senders_credential(
    service: FeedbackProcess, tmp_path: Path, database: str
) -> None:
    with service.client("sidecar-1") as sidecar, service.client("app") as app:
        outcome = outcome_event("o-1", "req-1", "digits", true_class=7)
        assert sidecar.record(outcome).status == fpb.RecordResult.ACCEPTED
        assert sidecar.record(outcome).status == fpb.RecordResult.DUPLICATE
        rating = fpb.FeedbackEvent(
            feedback_id="r-1", request_id="req-1", model="digits", type=fpb.FEEDBACK_RATING
        )
        rating.rating = 0.25
        results = app.record_batch([rating, outcome_event("o-1", "req-1", "digits", true_class=2)])
        assert [r.status for r in results] == [
            fpb.RecordResult.ACCEPTED,
            fpb.RecordResult.CONFLICT,
        ]
    with service.client("ops") as ops:
        history = ops.get("req-1")
    assert [(e.event.feedback_id, e.sender) for e in history.events] == [
        ("o-1", "sidecar-1"),
        ("r-1", "app"),
    ]
    assert history.events[0].event.label.class_index == 7

    stop(service, tmp_path)
    again = start(tmp_path, database, service.tokens)
    try:
        with again.client("ops") as ops:
            assert len(ops.get("req-1").events) == 2
    finally:
        stop(again)


def test_refusals_name_the_field_or_the_missing_right(service: FeedbackProcess) -> None:
    with service.client("sidecar-1") as sidecar:
        with pytest.raises(grpc.RpcError) as invalid:
            sidecar.record(outcome_event("", "req-1", "digits", true_class=1))
        assert code_of(invalid.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert "feedback_id" in str(invalid.value.details())
        review = fpb.FeedbackEvent(
            feedback_id="v-1",
            request_id="req-1",
            model="digits",
            type=fpb.FEEDBACK_REVIEW,
            label=fpb.Label(class_index=1),
        )
        with pytest.raises(grpc.RpcError) as denied:
            sidecar.record(review)
        assert code_of(denied.value) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as not_a_reader:
            sidecar.get("req-1")
        assert code_of(not_a_reader.value) == grpc.StatusCode.PERMISSION_DENIED
    with service.client("ops") as ops, pytest.raises(grpc.RpcError) as not_an_exporter:
        ops.export(fpb.ExportDatasetRequest(model="digits"))
    assert code_of(not_an_exporter.value) == grpc.StatusCode.PERMISSION_DENIED
    with service.client("analyst") as analyst:
        for bad, field in [
            (fpb.ExportDatasetRequest(), "model"),
            (fpb.ExportDatasetRequest(model="digits", strategy="newest"), "strategy"),
            (fpb.ExportDatasetRequest(model="digits", since=10, until=5), "until"),
            (fpb.ExportDatasetRequest(model="digits", label_sources=["rumour"]), "label_sources"),
        ]:
            with pytest.raises(grpc.RpcError) as invalid_query:
                analyst.export(bad)
            assert code_of(invalid_query.value) == grpc.StatusCode.INVALID_ARGUMENT
            assert str(invalid_query.value.details()).startswith(f"{field}:")
    with FeedbackClient(service.address, "not-a-token") as stranger:
        with pytest.raises(grpc.RpcError) as unknown:
            stranger.record(outcome_event("o-2", "req-1", "digits", true_class=1))
        assert code_of(unknown.value) == grpc.StatusCode.UNAUTHENTICATED
    with service.client("queue") as queue:
        assert queue.record(review).status == fpb.RecordResult.ACCEPTED


def test_the_cli_records_a_file_and_reads_a_request(
    service: FeedbackProcess, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {
            "feedback_id": "c-1",
            "request_id": "req-9",
            "model": "m",
            "type": "FEEDBACK_OUTCOME",
            "label": {"class_index": 3},
        },
        {
            "feedback_id": "c-2",
            "request_id": "req-9",
            "model": "m",
            "type": "FEEDBACK_IMPLICIT",
            "signal": {"name": "click", "value": 1},
        },
        {
            "feedback_id": "c-3",
            "request_id": "req-9",
            "model": "m",
            "type": "FEEDBACK_RATING",
            "rating": 7,
        },
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def hitl(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HITL_FEEDBACK_TOKEN": service.tokens[who]}
        command = hitl_command("feedback", *args, "--target", service.address)
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    recorded = hitl("app", "record", str(events))
    assert recorded.returncode == 1, recorded.stderr
    summary = json.loads(recorded.stdout)
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    assert summary["refused"][0]["feedback_id"] == "c-3"
    assert "rating" in summary["refused"][0]["message"]

    read = hitl("ops", "get", "req-9")
    assert read.returncode == 0, read.stderr
    assert [e["event"]["feedback_id"] for e in json.loads(read.stdout)["events"]] == [
        "c-1",
        "c-2",
    ]
    denied = hitl("app", "get", "req-9")
    assert denied.returncode == 1
    assert denied.stderr.startswith("hitl: PERMISSION_DENIED:")
    assert "Traceback" not in denied.stderr

    events.write_text('{"feedback_id": "x", "nope": 1}\n')
    unreadable = hitl("app", "record", str(events))
    assert unreadable.returncode == 2
    assert f"{events}:1: not a feedback event" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr


def post(
    process: FeedbackProcess, method: str, body: bytes, token: str = "", kind: str = "json"
) -> tuple[int, Any]:
    """One Connect call over HTTP, as curl makes it: its status and decoded JSON body."""
    headers = {"Content-Type": f"application/{kind}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"http://{process.http_address}/hitl.v1.Feedback/{method}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def http_service(tmp_path: Path) -> Iterator[FeedbackProcess]:
    db = f"sqlite:{tmp_path / 'feedback.db'}"
    running = start(tmp_path, db, add_principals(db, PRINCIPALS), http=True)
    yield running
    running.process.kill()
    running.process.wait()


def test_the_same_service_over_http_with_json_and_protobuf(http_service: FeedbackProcess) -> None:
    """Connect over HTTP: JSON bodies as curl sends them and protobuf from connect's own
    client; the same rules, credentials and log as over gRPC."""
    app, ops = http_service.tokens["app"], http_service.tokens["ops"]
    rating = {"feedbackId": "h-1", "requestId": "req-h", "model": "m",
              "type": "FEEDBACK_RATING", "rating": 0.4}  # fmt: skip
    assert post(http_service, "Record", json.dumps(rating).encode(), app) == (
        200,
        {"feedbackId": "h-1", "status": "ACCEPTED"},
    )
    assert post(http_service, "Record", json.dumps(rating).encode(), app)[1]["status"] == (
        "DUPLICATE"
    )
    status, refused = post(
        http_service, "Record", json.dumps({**rating, "rating": 7}).encode(), app
    )
    assert (status, refused["code"]) == (400, "invalid_argument")
    assert refused["message"].startswith("rating:")
    assert post(http_service, "Record", json.dumps(rating).encode())[0] == 401
    assert post(http_service, "Get", b'{"requestId": "req-h"}', app)[0] == 403
    status, unreadable = post(http_service, "Get", b'{"requestId":', ops)
    assert (status, unreadable["message"]) == (400, "the body is not a hitl.v1.GetRequest")

    outcome = outcome_event("h-2", "req-h", "m", true_class=1)
    with FeedbackClientSync(f"http://{http_service.http_address}", proto_json=False) as client:
        answer = client.record(outcome, headers={"authorization": f"Bearer {app}"})
    assert answer.status == fpb.RecordResult.ACCEPTED

    status, history = post(http_service, "Get", b'{"requestId": "req-h"}', ops)
    assert status == 200
    assert [e["event"]["feedbackId"] for e in history["events"]] == ["h-1", "h-2"]
    with http_service.client("ops") as over_grpc:
        assert [e.event.feedback_id for e in over_grpc.get("req-h").events] == ["h-1", "h-2"]

    analyst = {"authorization": f"Bearer {http_service.tokens['analyst']}"}
    query = fpb.ExportDatasetRequest(model="m")
    with FeedbackClientSync(f"http://{http_service.http_address}", proto_json=False) as client:
        (only,) = list(client.export(query, headers=analyst))
        with pytest.raises(ConnectError) as not_an_exporter:
            list(client.export(query, headers={"authorization": f"Bearer {ops}"}))
    manifest = json.loads(only.manifest_json)  # no decision of m was recorded: no rows
    assert (manifest["rows"], manifest["query"]["model"]) == (0, "m")
    assert not_an_exporter.value.code == Code.PERMISSION_DENIED
