"""The feedback service's JetStream consumer over TLS with a token from a file, against
a real nats-server of the test's own (a certificate from a throwaway CA, a token) and a
real feedback service process: a decision the sidecar's feedback sink publishes is
recorded, and a model update is announced on the same server with the same access;
with a wrong token nothing is recorded, the refused connection is logged with its
reason, counted and retried, and no token reaches the log."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.escalation.sinks import NatsAccess, Spooled
from sidecar.escalation.sinks.nats import FeedbackNatsSink
from sidecar.feedback.client import outcome_event
from tests.certs import Authority
from tests.escalations import escalation
from tests.feedback_service import PRINCIPALS, FeedbackProcess, add_principals, start
from tests.integration.conftest import wait_for
from tests.natsserver import NatsServer, tls_server, token_config
from tests.ports import free_port

pytestmark = pytest.mark.integration

TOKEN = "feedb4ck-nats-token-3c9e"  # noqa: S105 - the test server's token
WRONG = "wrong-feedback-token-81aa"  # a token the server does not know
STREAM = "HITL_DEFAULT_FEEDBACK"


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki", "nats test CA")


@pytest.fixture
def nats_server(tmp_path: Path, authority: Authority) -> Iterator[NatsServer]:
    """A nats-server serving TLS only and admitting only TOKEN."""
    with tls_server(tmp_path, authority, token_config(TOKEN), token=TOKEN) as server:
        yield server


def _token_file(tmp_path: Path, name: str, token: str) -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    return path


def _tls_url(server: NatsServer) -> str:
    return server.url.replace("nats://", "tls://")


def _publish_decision(server: NatsServer, authority: Authority, tmp_path: Path) -> str:
    """A decision published as a sidecar does (its feedback sink, over TLS with the
    right token); its request_id."""
    record = escalation("tls-1", created_at=time.time()).to_dict()
    access = NatsAccess(authority.ca_pem, token_file=_token_file(tmp_path, "sink.token", TOKEN))
    sink = FeedbackNatsSink(
        [_tls_url(server)], "default", 5.0, lambda model, revision: ("a", "b", "c"), access
    )

    async def deliver() -> None:
        try:
            assert await sink.deliver([Spooled(orjson.dumps(record), record, "tls-1")]) == []
        finally:
            await sink.close()

    asyncio.run(deliver())
    return str(record["request_id"])


def _service(
    tmp_path: Path, server: NatsServer, authority: Authority, token: str, *extra: str
) -> FeedbackProcess:
    """A feedback service consuming the server's stream over tls:// with the CA and a
    file holding token (all three from the environment)."""
    db = f"sqlite:{tmp_path / 'feedback.db'}"
    env = {
        "HITL_FEEDBACK_NATS": _tls_url(server),
        "HITL_FEEDBACK_NATS_CA": str(authority.cert),
        "HITL_FEEDBACK_NATS_TOKEN_FILE": str(_token_file(tmp_path, "feedback.token", token)),
    }
    return start(tmp_path / "feedback", db, add_principals(db, PRINCIPALS), *extra, env=env)


def _history(service: FeedbackProcess, request_id: str) -> fpb.RequestHistory:
    with service.client("ops") as ops:
        return ops.get(request_id)


def _failures(metrics_port: int) -> float:
    """hitl_task_failures_total of the JetStream consumer, as the service exports it."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hitl_task_failures_total" and (
                sample.labels.get("task") == "feedback-jetstream"
            ):
                return float(sample.value)
    return 0.0


def _stop(service: FeedbackProcess) -> None:
    service.process.kill()
    service.process.wait()


def test_a_decision_over_tls_with_a_token_file_is_recorded(
    tmp_path: Path, nats_server: NatsServer, authority: Authority
) -> None:
    """tls://, the server's CA and a token file: the sidecar sink's decision is recorded,
    as the stream's principal, and the token is in no log line."""
    request_id = _publish_decision(nats_server, authority, tmp_path)
    service = _service(tmp_path, nats_server, authority, TOKEN)
    try:
        wait_for(lambda: _history(service, request_id).HasField("decision"), 15.0, "the decision")
        known = _history(service, request_id)
    finally:
        _stop(service)
    assert known.decision.escalation_id == "tls-1"
    assert known.decision.labels == ["a", "b", "c"]
    assert known.decision_sender == f"nats:{STREAM}"
    log = (tmp_path / "feedback" / "feedback.log").read_text()
    assert "feedback.jetstream_consuming" in log
    assert TOKEN not in log


def test_a_wrong_token_records_nothing_and_is_retried_without_showing_it(
    tmp_path: Path, nats_server: NatsServer, authority: Authority
) -> None:
    """A token the server refuses: the decision in the stream is not recorded, the
    refusal is logged with its reason and counted at each retry, and neither token
    appears in the log."""
    request_id = _publish_decision(nats_server, authority, tmp_path)
    metrics_port = free_port()
    log = tmp_path / "feedback" / "feedback.log"
    service = _service(
        tmp_path, nats_server, authority, WRONG, "--metrics-addr", f"127.0.0.1:{metrics_port}"
    )
    try:
        wait_for(lambda: _failures(metrics_port) >= 2, 15.0, "two counted failures")
        assert not _history(service, request_id).HasField("decision")
    finally:
        _stop(service)
    failed = [line for line in log.read_text().splitlines() if "feedback.jetstream_failed" in line]
    assert len(failed) >= 2
    assert all("authorization violation" in line.lower() for line in failed)
    assert all(f"tls://127.0.0.1:{nats_server.port}" in line for line in failed)
    assert WRONG not in log.read_text()
    assert TOKEN not in log.read_text()


def test_a_model_update_is_announced_over_tls_with_the_same_access(
    tmp_path: Path, nats_server: NatsServer, authority: Authority
) -> None:
    """The model-update announcement goes to the same TLS server with the same token
    file as the consumer: one labelled decision (--trigger-rows 1) is announced."""
    request_id = _publish_decision(nats_server, authority, tmp_path)
    datasets = tmp_path / "datasets"
    service = _service(
        tmp_path, nats_server, authority, TOKEN,
        "--trigger-rows", "1", "--sweep-seconds", "0.2", "--datasets", str(datasets),
    )  # fmt: skip
    try:
        wait_for(lambda: _history(service, request_id).HasField("decision"), 15.0, "the decision")
        model = _history(service, request_id).decision.model
        with service.client("app") as app:
            app.record(outcome_event("o-tls", request_id, model, true_class=1))

        def announced() -> list[dict[str, object]]:
            try:
                return nats_server.messages("HITL_MODEL_UPDATES")
            except Exception:  # no stream yet
                return []

        wait_for(announced, 15.0, "a model update on HITL_MODEL_UPDATES")
    finally:
        _stop(service)
    (update,) = announced()
    assert (update["model"], update["new_labels"]) == (model, 1)
    assert TOKEN not in (tmp_path / "feedback" / "feedback.log").read_text()
