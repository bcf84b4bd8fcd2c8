"""Clients for serving code: ``RouterClient`` (blocking) and ``AsyncRouterClient``.

Each keeps one channel for its lifetime (create one per process and reuse it), sets
a deadline on every call, propagates the current OpenTelemetry trace context (when
opentelemetry-api is installed: ``pip install 'hitl-client[tracing]'``), and
retries UNAVAILABLE with gRPC's own retry policy (exponential backoff, jitter). A
retry resends the same message, so the same request_id: the sidecar answers a
replay with the original decision and never escalates twice.

    from hitl_client import RouterClient, route_request
    with RouterClient("127.0.0.1:7431") as client:
        decision = client.route(route_request("req-1", "digits", logits))
        if decision.tier != TIER_AUTOMATED: ...
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hitl_client.coalescer import Batching, Coalescer
from hitl_client.stubs.hitl.v1 import decision_pb2 as decision_pb
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

try:
    from opentelemetry import propagate
except ImportError:  # installed without the tracing extra: there is no context to carry
    propagate = None  # type: ignore[assignment]

RouteRequest = pb.RouteRequest
RouteResponse = pb.RouteResponse
RouteResult = pb.RouteResult
Tier = decision_pb.Tier
Reason = decision_pb.Reason
TIER_AUTOMATED = decision_pb.TIER_AUTOMATED
TIER_HUMAN_ASSISTED = decision_pb.TIER_HUMAN_ASSISTED
TIER_HUMAN_PRIMARY = decision_pb.TIER_HUMAN_PRIMARY

DEFAULT_TIMEOUT = 1.0
ROUTER_SERVICE = "hitl.v1.Router"


def route_request(
    request_id: str,
    model: str,
    logits: Iterable[float],
    *,
    model_version: str = "",
    domain: str = "",
    string_attributes: Mapping[str, str] | None = None,
    numeric_attributes: Mapping[str, float] | None = None,
    input_ref: str = "",
    context: Mapping[str, str] | None = None,
    probabilities: bool = False,
) -> pb.RouteRequest:
    """Build a RouteRequest; ``probabilities=True`` marks logits as probabilities."""
    return pb.RouteRequest(
        request_id=request_id,
        model=model,
        model_version=model_version,
        logits=[float(x) for x in logits],
        input_kind=decision_pb.INPUT_KIND_PROBABILITIES
        if probabilities
        else decision_pb.INPUT_KIND_LOGITS,
        domain=domain,
        string_attributes=dict(string_attributes or {}),
        numeric_attributes=dict(numeric_attributes or {}),
        input_ref=input_ref,
        context=dict(context or {}),
    )


def channel_options(max_attempts: int = 4) -> list[tuple[str, Any]]:
    """Channel options with a retry policy for UNAVAILABLE on the Router's unary calls.
    max_attempts counts the first call; 1 turns retries off, gRPC caps it at 5."""
    if not 1 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be 1 to 5, got {max_attempts}")
    if max_attempts == 1:
        return [("grpc.enable_retries", 0)]
    config = {
        "methodConfig": [
            {
                "name": [
                    {"service": ROUTER_SERVICE, "method": "Route"},
                    {"service": ROUTER_SERVICE, "method": "RouteBatch"},
                    {"service": ROUTER_SERVICE, "method": "RecordOutcome"},
                ],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.02s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]


def _trace_metadata() -> tuple[tuple[str, str | bytes], ...]:
    if propagate is None:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


class RouterClient:
    """Blocking client; thread-safe (gRPC channels are).

    With ``batching``, ``route`` calls from several threads are coalesced into
    RouteStream batches by an ``AsyncRouterClient`` on an event loop of its own, in
    a thread the client starts and ``close`` stops."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        batching: Batching | None = None,
    ) -> None:
        self._channel = grpc.insecure_channel(target, options=channel_options(max_attempts))
        self._stub = pb_grpc.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout
        self._batched: _LoopThread | None = None
        if batching is not None:
            self._batched = _LoopThread(target, timeout, max_attempts, batching)

    def route(self, request: pb.RouteRequest, *, timeout: float | None = None) -> pb.RouteResponse:
        if self._batched is not None:
            return self._batched.route(request, timeout or self.timeout)
        response: pb.RouteResponse = self._stub.Route(
            request, timeout=timeout or self.timeout, metadata=_trace_metadata()
        )
        return response

    def route_batch(
        self, requests: Sequence[pb.RouteRequest], *, timeout: float | None = None
    ) -> list[pb.RouteResult]:
        response: pb.RouteBatchResponse = self._stub.RouteBatch(
            pb.RouteBatchRequest(requests=requests),
            timeout=timeout or self.timeout,
            metadata=_trace_metadata(),
        )
        return list(response.results)

    def record_outcome(
        self, request: pb.OutcomeRequest, *, timeout: float | None = None
    ) -> pb.OutcomeResponse:
        response: pb.OutcomeResponse = self._stub.RecordOutcome(
            request, timeout=timeout or self.timeout, metadata=_trace_metadata()
        )
        return response

    def serving(self, *, timeout: float | None = None) -> bool:
        """Whether the sidecar reports SERVING (a policy and its calibrators are loaded)."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=ROUTER_SERVICE),
                timeout=timeout or self.timeout,
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


class _LoopThread:
    """An AsyncRouterClient with batching on an event loop in a thread of its own."""

    def __init__(self, target: str, timeout: float, max_attempts: int, batching: Batching) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hitl-client-batching", daemon=True
        )
        self._thread.start()

        async def make() -> AsyncRouterClient:
            return AsyncRouterClient(
                target, timeout=timeout, max_attempts=max_attempts, batching=batching
            )

        self._client = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    def route(self, request: pb.RouteRequest, timeout: float) -> pb.RouteResponse:
        coroutine = self._client.route(request, timeout=timeout)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class AsyncRouterClient:
    """asyncio client; create it inside the event loop that uses it.

    With ``batching``, concurrent ``route`` calls are coalesced into RouteStream
    batches (``hitl_client.coalescer``); errors are then ``RouteError``, a
    ``grpc.RpcError`` with the same ``code()`` and ``details()`` a unary call gives."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        batching: Batching | None = None,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=channel_options(max_attempts))
        self._stub: pb_grpc.RouterAsyncStub = pb_grpc.RouterStub(self._channel)
        self.timeout = timeout
        self.coalescer = None if batching is None else Coalescer(self._stub, batching, timeout)

    async def route(
        self, request: pb.RouteRequest, *, timeout: float | None = None
    ) -> pb.RouteResponse:
        if self.coalescer is not None:
            return await self.coalescer.route(request, timeout or self.timeout)
        response: pb.RouteResponse = await self._stub.Route(
            request, timeout=timeout or self.timeout, metadata=_trace_metadata()
        )
        return response

    async def route_batch(
        self, requests: Sequence[pb.RouteRequest], *, timeout: float | None = None
    ) -> list[pb.RouteResult]:
        response: pb.RouteBatchResponse = await self._stub.RouteBatch(
            pb.RouteBatchRequest(requests=requests),
            timeout=timeout or self.timeout,
            metadata=_trace_metadata(),
        )
        return list(response.results)

    async def route_stream(
        self, batches: AsyncIterable[Sequence[pb.RouteRequest]]
    ) -> AsyncIterator[list[pb.RouteResult]]:
        """Send each batch on one long-lived stream; yield each batch's results in order.
        The stream has no deadline: it lives as long as batches keeps producing."""

        async def requests() -> AsyncIterator[pb.RouteBatchRequest]:
            async for batch in batches:
                yield pb.RouteBatchRequest(requests=batch)

        call = self._stub.RouteStream(requests(), metadata=_trace_metadata())
        async for response in call:
            yield list(response.results)

    async def record_outcome(
        self, request: pb.OutcomeRequest, *, timeout: float | None = None
    ) -> pb.OutcomeResponse:
        response: pb.OutcomeResponse = await self._stub.RecordOutcome(
            request, timeout=timeout or self.timeout, metadata=_trace_metadata()
        )
        return response

    async def wait_ready(self) -> None:
        """Return once the channel is connected (it connects lazily otherwise)."""
        await self._channel.channel_ready()

    async def close(self) -> None:
        if self.coalescer is not None:
            await self.coalescer.close()
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()
