"""The benchmarks measure honestly: open-loop latency counts a server's stall in
every call scheduled during it, and throughput measurements never repeat request
ids (a repeated id is a cheap replay, not a prediction)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from benchmarks import feedback_bench, loadgen, throughput
from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

STALL_SECONDS = 0.3


class RecordingRouter(pb_grpc.RouterServicer):
    """Answers at once and records every request id; the call whose id is
    stall_id holds the servicer's lock for STALL_SECONDS, so every call behind it
    waits as it would behind a stalled server."""

    def __init__(self, stall_id: str = "") -> None:
        self.ids: list[str] = []
        self._stall_id = stall_id
        self._lock = threading.Lock()

    def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        with self._lock:
            self.ids.append(request.request_id)
            if request.request_id == self._stall_id:
                time.sleep(STALL_SECONDS)
        return pb.RouteResponse(request_id=request.request_id)

    def RouteBatch(self, request: pb.RouteBatchRequest, context: Any) -> pb.RouteBatchResponse:
        with self._lock:
            self.ids.extend(item.request_id for item in request.requests)
        return pb.RouteBatchResponse(
            results=[
                pb.RouteResult(response=pb.RouteResponse(request_id=item.request_id))
                for item in request.requests
            ]
        )

    def RecordOutcome(self, request: pb.OutcomeRequest, context: Any) -> pb.OutcomeResponse:
        return pb.OutcomeResponse()

    def RouteStream(
        self, request_iterator: Iterator[pb.RouteBatchRequest], context: Any
    ) -> Iterator[pb.RouteBatchResponse]:
        for batch in request_iterator:
            yield self.RouteBatch(batch, context)


def serve(router: RecordingRouter) -> tuple[grpc.Server, str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_RouterServicer_to_server(router, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


PAYLOADS = [
    route_request("template", "m", [0.1 * i, 0.2, 0.3]).SerializeToString() for i in range(20)
]


def test_a_stall_shows_in_every_call_scheduled_during_it() -> None:
    """The calls due while the server stalls each count the wait from when they were due."""
    rate, stalled_call = 200.0, 50
    router = RecordingRouter(stall_id=f"stall-w0-{stalled_call}")
    server, address = serve(router)
    try:
        result = loadgen.run_load(address, rate, 1.5, PAYLOADS, 1, "stall")
    finally:
        server.stop(None)
    assert result.errors == 0
    assert result.sent == 300
    # The calls due in the first 0.2 s of the stall (40 of them) waited at least
    # 0.1 s each; a closed-loop client would have sent them late and seen one slow call.
    slow = np.count_nonzero(result.latencies_ms >= 100.0)
    assert slow >= 30, f"{slow} calls of 100 ms or more"
    assert result.latencies_ms.max() >= STALL_SECONDS * 1000 * 0.8
    assert loadgen.percentiles(result.latencies_ms)["p90"] >= 100.0


@pytest.mark.parametrize("method", ["batch", "stream"])
def test_throughput_measurements_never_repeat_a_request_id(method: str) -> None:
    """Two measurements against one server send ids the server has not seen."""
    router = RecordingRouter()
    server, address = serve(router)
    try:
        first = throughput.measure(address, method, 10, 0.3, PAYLOADS)
        seen = len(router.ids)
        second = throughput.measure(address, method, 10, 0.3, PAYLOADS)
    finally:
        server.stop(None)
    assert first > 0
    assert second > 0
    assert seen > 0
    assert len(router.ids) > seen
    assert len(set(router.ids)) == len(router.ids)


def test_closed_loop_lanes_send_distinct_ids_until_the_deadline() -> None:
    """Each lane sends its next call when its last answers; every id is new."""
    router = RecordingRouter()
    server, address = serve(router)
    try:
        result = loadgen.closed_loop(address, 4, 0.5, PAYLOADS, "closed")
    finally:
        server.stop(None)
    assert result.errors == 0
    assert result.latencies_ms.size == len(router.ids) > 4
    assert len(set(router.ids)) == len(router.ids)
    assert result.rate > 0


def test_the_feedback_benchmark_measures_a_real_service(tmp_path: Path) -> None:
    """A short run against a real feedback service, over gRPC and HTTP: every call
    answered, the sampled events joined to their decisions, the batch phases
    sustained."""
    report = feedback_bench.run(tmp_path, rate=100.0, seconds=1.0)
    assert report["record"]["errors"] == 0
    assert report["record"]["sent"] == 100
    assert report["joined"]["joined"] == report["joined"]["sampled"] > 0
    assert report["record_batch"]["events_per_second"] > 0
    assert report["record_http"]["errors"] == 0
    assert report["record_http"]["sent"] == 100
    assert report["record_batch_http"]["events_per_second"] > 0
    assert report["passed"] is True
