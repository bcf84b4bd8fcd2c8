"""The client against a real gRPC server that fails on purpose: retries keep the
request_id, deadlines hold, and the caller's trace context travels in metadata."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from hitl_client.router import RouterClient, route_request
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


class Flaky(pb_grpc.RouterServicer):
    """Answers UNAVAILABLE to the first `failures` calls, then a fixed decision."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[tuple[str, dict[str, str]]] = []

    def Route(self, request: pb.RouteRequest, context: grpc.ServicerContext) -> pb.RouteResponse:
        self.seen.append((request.request_id, dict(context.invocation_metadata())))  # type: ignore[arg-type]
        if len(self.seen) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "escalation not recorded: try again")
        return pb.RouteResponse(request_id=request.request_id, tier=1)  # type: ignore[arg-type]

    def RouteBatch(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    def RouteStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    def RecordOutcome(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(servicer: Flaky) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RouterServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_unavailable_is_retried_with_the_same_request_id(serve: Any) -> None:
    """Two UNAVAILABLE answers, then success: three calls, one request_id."""
    flaky = Flaky(failures=2)
    with RouterClient(serve(flaky)) as client:
        response = client.route(route_request("once", "m", [1.0, 2.0]))
    assert response.request_id == "once"
    assert [request_id for request_id, _ in flaky.seen] == ["once", "once", "once"]


def test_retries_are_bounded(serve: Any) -> None:
    """A server that keeps failing surfaces UNAVAILABLE after max_attempts calls."""
    flaky = Flaky(failures=100)
    with (
        RouterClient(serve(flaky), max_attempts=3) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.route(route_request("r", "m", [1.0]))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(flaky.seen) == 3


def test_trace_context_is_propagated(serve: Any) -> None:
    """Inside an active span the client sends a W3C traceparent carrying its trace id."""
    flaky = Flaky(failures=0)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("serving") as span, RouterClient(serve(flaky)) as client:
        client.route(route_request("t", "m", [1.0]))
        trace_id = format(span.get_span_context().trace_id, "032x")
    traceparent = flaky.seen[0][1]["traceparent"]
    assert traceparent.split("-")[1] == trace_id


def test_deadline_is_enforced(serve: Any) -> None:
    """A call to a server that does not answer in time fails with DEADLINE_EXCEEDED."""

    class Slow(Flaky):
        def Route(
            self, request: pb.RouteRequest, context: grpc.ServicerContext
        ) -> pb.RouteResponse:
            time.sleep(0.5)
            return super().Route(request, context)

    with (
        RouterClient(serve(Slow(0)), timeout=0.05) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.route(route_request("slow", "m", [1.0]))
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
