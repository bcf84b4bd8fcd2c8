"""Dynamic batching for serving code: concurrent ``route()`` calls coalesced into
RouteStream batches, so a model server that answers many requests at once pays the
sidecar's batch cost per prediction without changing its code.

A call goes out at once when no batch is on its way to the sidecar, so a call at low
load waits for nothing. Otherwise it joins the pending batch, which goes out when
the batch on its way is answered, when it holds ``max_items`` requests, or
``window_us`` microseconds after its first request arrived, whichever comes first:
under load, a batch gathers what arrived while the last one was being decided.
Batches go out in order on one long-lived RouteStream, whose answers come back in
the same order;
each caller gets its own request's answer, or its own error (an invalid request
fails alone, as in RouteBatch). When the stream breaks (the sidecar restarted, a
connection dropped), the batches it had not answered are sent again as RouteBatch
calls, which the channel retries on UNAVAILABLE like unary Route: a request_id the
sidecar has seen is answered from its replay window, never escalated twice. The
next batch opens a new stream.

A batch carries no caller's trace context (one stream serves many callers): the
sidecar's span for it starts a trace of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

MAX_ITEMS = 4096  # the sidecar's own bound on a batch
log = logging.getLogger("hitl.client")  # the standard library's: the client adds no dependency


@dataclass(frozen=True, slots=True)
class Batching:
    """When a pending batch goes out (besides when the last one is answered): at
    max_items requests, or window_us after its first request arrived."""

    max_items: int = 64
    window_us: float = 200.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_items <= MAX_ITEMS:
            raise ValueError(f"max_items must be 1 to {MAX_ITEMS}, got {self.max_items}")
        if not 0.0 <= self.window_us <= 1_000_000.0:
            raise ValueError(f"window_us must be 0 to 1,000,000, got {self.window_us}")


class RouteError(grpc.RpcError):
    """One request's error in a batch, with the status a unary Route would have had."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


_CODES = {code.value[0]: code for code in grpc.StatusCode}
Waiter = asyncio.Future[pb.RouteResponse]


class Coalescer:
    """Coalesces ``route`` calls on one event loop into RouteStream batches."""

    def __init__(
        self, stub: pb_grpc.RouterAsyncStub, batching: Batching, retry_timeout: float
    ) -> None:
        self._stub = stub
        self._batching = batching
        self._retry_timeout = retry_timeout
        self._pending: list[pb.RouteRequest] = []
        self._waiters: list[Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[pb.RouteBatchRequest | None] | None = None
        self._sent: deque[tuple[list[pb.RouteRequest], list[Waiter]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # sent, for tests and the benchmark
        self.stream_failures = 0  # streams that broke or answered badly (logged too)

    async def route(self, request: pb.RouteRequest, timeout: float) -> pb.RouteResponse:
        if self._closed:
            raise RouteError(grpc.StatusCode.CANCELLED, "the client is closed")
        loop = asyncio.get_running_loop()
        waiter: Waiter = loop.create_future()
        self._pending.append(request)
        self._waiters.append(waiter)
        if len(self._pending) >= self._batching.max_items or not self._sent:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._batching.window_us / 1e6, self._flush)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise RouteError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout} s"
            ) from None

    async def close(self) -> None:
        """End the stream; every call not yet answered fails with CANCELLED."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        _fail(self._waiters, RouteError(grpc.StatusCode.CANCELLED, "the client closed"))
        self._pending, self._waiters = [], []
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_sent(RouteError(grpc.StatusCode.CANCELLED, "the client closed"))

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        requests, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        if self._outbox is None:
            self._open()
        assert self._outbox is not None
        self._sent.append((requests, waiters))
        self._outbox.put_nowait(pb.RouteBatchRequest(requests=requests))
        self.batches += 1

    def _open(self) -> None:
        outbox: asyncio.Queue[pb.RouteBatchRequest | None] = asyncio.Queue()

        async def batches() -> AsyncIterator[pb.RouteBatchRequest]:
            while (batch := await outbox.get()) is not None:
                yield batch

        call = self._stub.RouteStream(batches())
        self._outbox = outbox
        self._reader = asyncio.ensure_future(self._read(call, outbox))

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[pb.RouteBatchRequest, pb.RouteBatchResponse],
        outbox: asyncio.Queue[pb.RouteBatchRequest | None],
    ) -> None:
        """Answer each sent batch's waiters in order; if the stream ends or breaks,
        send what it left unanswered again as RouteBatch calls."""
        try:
            async for response in call:
                _requests, waiters = self._sent.popleft()
                _deliver(waiters, response)
                if not self._sent:
                    self._flush()  # what gathered while this batch was decided
        except grpc.aio.AioRpcError as exc:  # what was not answered is sent again below
            self.stream_failures += 1
            log.warning(
                "RouteStream broke (%s); %d batches sent again", exc.code(), len(self._sent)
            )
        except Exception as exc:  # a malformed answer: its callers learn of it, nobody hangs
            self.stream_failures += 1
            log.error("bad RouteStream answer: %s", exc)
            self._fail_sent(RouteError(grpc.StatusCode.INTERNAL, f"bad RouteStream answer: {exc}"))
        finally:
            if self._outbox is outbox:
                self._outbox = None
            call.cancel()
        unanswered = list(self._sent)
        self._sent.clear()
        for requests, waiters in unanswered:
            await self._resend(requests, waiters)

    async def _resend(self, requests: list[pb.RouteRequest], waiters: list[Waiter]) -> None:
        try:
            response = await self._stub.RouteBatch(
                pb.RouteBatchRequest(requests=requests),
                timeout=self._retry_timeout,
            )
            _deliver(waiters, response)
        except grpc.aio.AioRpcError as exc:
            _fail(waiters, RouteError(exc.code(), exc.details() or "the sidecar did not answer"))
        except Exception as exc:  # a malformed answer: nobody waits for ever
            log.error("bad RouteBatch answer: %s", exc)
            _fail(waiters, RouteError(grpc.StatusCode.INTERNAL, f"bad RouteBatch answer: {exc}"))

    def _fail_sent(self, error: RouteError) -> None:
        for _requests, waiters in self._sent:
            _fail(waiters, error)
        self._sent.clear()


def _fail(waiters: list[Waiter], error: RouteError) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _deliver(waiters: list[Waiter], response: pb.RouteBatchResponse) -> None:
    for waiter, result in zip(waiters, response.results, strict=True):
        if waiter.done():  # its caller gave up (deadline) or went away
            continue
        if result.HasField("response"):
            waiter.set_result(result.response)
        else:
            code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
            waiter.set_exception(RouteError(code, result.error.message))
