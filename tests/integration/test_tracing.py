"""Traces leave the sidecar and the feedback service through the standard OTLP
exporter, configured only by OTEL_* variables, and each Route span, and each feedback
call's span, continues the caller's trace."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from hitl_client.stubs.hitl.v1 import router_pb2_grpc
from sidecar.feedback.client import outcome_event
from sidecar.feedback.stubs.feedback_connect import FeedbackClientSync
from sidecar.telemetry import span_export
from sidecar.telemetry.span_export import MAX_QUEUE, SHIP_SECONDS, FinishedSpan, SpanShipper
from tests.artefacts import confident_logits
from tests.feedback_service import PRINCIPALS, add_principals, start, stop
from tests.integration.conftest import start_sidecar, wait_for

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector(otlp_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        self.requests.append(request)
        return otlp.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        return [
            span
            for r in self.requests
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(0)


def otlp_env(port: int) -> dict[str, str]:
    """The variables that export spans to the collector on port."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }


def route(address: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    with grpc.insecure_channel(address) as channel:
        router_pb2_grpc.RouterStub(channel).Route(
            route_request("traced", "m", confident_logits(1)), metadata=metadata, timeout=2
        )


def test_route_span_exported_over_otlp(
    tmp_path: Path, policy_file: Path, collector: tuple[Collector, int]
) -> None:
    """One SERVER span per Route, child of the caller's span, with the decision attributes."""
    receiver, port = collector
    env = {**otlp_env(port), "OTEL_SERVICE_NAME": "sidecar-under-test"}
    running = start_sidecar(tmp_path, policy_file, env=env)
    try:
        running.wait_serving()
        route(running.address, (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),))
        wait_for(
            lambda: any(s.name == "hitl.Route" for s in receiver.spans()), 10, "the exported span"
        )
    finally:
        running.stop()
    (span,) = [s for s in receiver.spans() if s.name == "hitl.Route"]
    assert span.trace_id.hex() == CALLER_TRACE
    assert span.parent_span_id.hex() == CALLER_SPAN
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["hitl.tier"].string_value == "AUTOMATED"
    assert attributes["hitl.reason"].string_value == "THRESHOLD"
    assert attributes["hitl.policy_revision"].int_value == 1
    assert attributes["hitl.calibration_version"].string_value == "t-v1"
    assert attributes["hitl.model"].string_value == "m"
    resource = receiver.requests[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}[
        "service.name"
    ] == "sidecar-under-test"


def test_the_exporter_child_runs_only_on_cores_nothing_else_wants(
    tmp_path: Path, policy_file: Path, collector: tuple[Collector, int]
) -> None:
    """The span-export child, and every thread its exporter starts, are under
    SCHED_IDLE, so its encoding never holds a core a Route call wakes up for; the
    sidecar is not."""
    receiver, port = collector
    running = start_sidecar(tmp_path, policy_file, env=otlp_env(port))
    try:
        running.wait_serving()
        route(running.address)
        wait_for(receiver.spans, 10, "an exported span")
        pid = running.process.pid
        (child,) = [  # beside it, multiprocessing's resource tracker
            child
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        threads = [int(t.name) for t in Path(f"/proc/{child}/task").iterdir()]
        policies = {os.sched_getscheduler(t) for t in threads}
        sidecar_policy = os.sched_getscheduler(pid)
    finally:
        running.stop()
    assert len(threads) > 1
    assert policies == {os.SCHED_IDLE}
    assert sidecar_policy == os.SCHED_OTHER


def test_a_starved_exporter_child_drops_spans_and_never_blocks_a_request(
    collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under SCHED_IDLE the child may get no core for a while (here it is stopped):
    the pipe fills, the shipper waits on it, and ``ship`` on the request path keeps
    returning at once, dropping and counting what the bounded queue cannot hold.
    Once the child runs again, what was shipped is exported and shutdown completes."""
    receiver, port = collector
    for name, value in otlp_env(port).items():
        monkeypatch.setenv(name, value)
    shipper = SpanShipper({"service.name": "starved"})
    child = shipper._child.pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    try:
        span = FinishedSpan(
            "hitl.Route", 1, 2, 1, 0, False, SpanKind.SERVER, 1, 2, None, {"a": 1}, "s"
        )
        for _ in range(2000):  # more than the pipe holds; the shipper blocks on it
            shipper.ship(span)
        time.sleep(3 * SHIP_SECONDS)
        before = shipper.dropped
        for _ in range(MAX_QUEUE + 500):
            shipper.ship(span)
        assert shipper.dropped - before >= 500
    finally:
        os.kill(child, signal.SIGCONT)
    shipper.shutdown()
    assert shipper._child.exitcode == 0
    assert len(receiver.spans()) == 2000 + MAX_QUEUE + 500 - shipper.dropped


def test_an_exporter_child_that_never_exits_is_killed_and_reaped_on_shutdown(
    collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that does not finish within CHILD_EXIT_SECONDS of shutdown (here it
    is stopped for good) is killed, logged, and reaped: shutdown returns and leaves
    no zombie behind."""
    _receiver, port = collector
    for name, value in otlp_env(port).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(span_export, "CHILD_EXIT_SECONDS", 0.5)
    shipper = SpanShipper({"service.name": "hung"})
    child = shipper._child.pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    with capture_logs() as logs:
        started = time.monotonic()
        shipper.shutdown()
    assert time.monotonic() - started < 5
    assert shipper._child.exitcode == -signal.SIGKILL
    assert not Path(f"/proc/{child}").exists()
    assert [entry["event"] for entry in logs] == ["spans.exporter_killed"]


def test_a_feedback_call_continues_its_callers_trace_and_links_the_decisions_route_span(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    """The feedback service's span of each call, over gRPC and over HTTP, is the
    child of the caller's span, and links to the Route span of the decision the call
    is about (the ids the sidecar sent in its decision record)."""
    receiver, port = collector
    db = f"sqlite:{tmp_path / 'feedback.db'}"
    env = {**otlp_env(port), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    running = start(tmp_path, db, add_principals(db, PRINCIPALS), http=True, env=env)
    route_trace, route_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    decision = fpb.DecisionRecord(
        request_id="req-t", model="m", tier=dpb.TIER_HUMAN_PRIMARY, reason=dpb.REASON_THRESHOLD,
        predicted_class=1,
        logits=[0.2, 0.3], decided_at=time.time(), inclusion_probability=1.0,
        trace_id=route_trace, span_id=route_span,
    )  # fmt: skip
    caller = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
    try:
        with running.client("sidecar-1") as sidecar:
            (kept,) = sidecar.record_decisions([decision])
        assert kept.status == fpb.RecordResult.ACCEPTED
        with grpc.insecure_channel(running.address) as channel:
            fpb_grpc.FeedbackStub(channel).Record(
                outcome_event("o-grpc", "req-t", "m", true_class=1),
                metadata=(("authorization", f"Bearer {running.tokens['app']}"), *caller),
                timeout=10,
            )
        headers = {"authorization": f"Bearer {running.tokens['app']}", **dict(caller)}
        with FeedbackClientSync(f"http://{running.http_address}", proto_json=False) as client:
            client.record(outcome_event("o-http", "req-t", "m", true_class=0), headers=headers)
        wait_for(lambda: len(record_spans(receiver)) == 2, 10, "both Record spans")
    finally:
        stop(running, tmp_path)
    systems = set()
    for span in record_spans(receiver):
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (CALLER_TRACE, CALLER_SPAN)
        assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
        assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [
            (route_trace, route_span)
        ]
        systems.add({a.key: a.value.string_value for a in span.attributes}["rpc.system"])
    assert systems == {"grpc", "connect_rpc"}
    (decisions,) = [s for s in receiver.spans() if s.name.endswith("/RecordDecisions")]
    assert [link.span_id.hex() for link in decisions.links] == [route_span]


def record_spans(receiver: Collector) -> list[Span]:
    return [s for s in receiver.spans() if s.name == "hitl.v1.Feedback/Record"]
