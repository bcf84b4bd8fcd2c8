"""The ReviewQueue servicer: proto in, ReviewQueue calls, proto out. Nothing else.

Also the one table that maps the review queue's errors to gRPC status codes. The
server is gRPC's thread-pool server: every store call blocks on its database, and a
review queue's traffic (forwarder batches, people clicking) needs no event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.errors import HitlError
from sidecar.review import messages
from sidecar.review.queue import ReviewQueue
from sidecar.serving import status_of

log = structlog.get_logger("hitl.review")

T = TypeVar("T")


class ReviewQueueServicer(rpb_grpc.ReviewQueueServicer):
    def __init__(self, queue: ReviewQueue) -> None:
        self._queue = queue

    def Submit(
        self, request: rpb.SubmitRequest, context: grpc.ServicerContext
    ) -> rpb.SubmitResponse:
        escalations = [messages.to_escalation(m) for m in request.escalations]
        results = _call(context, "Submit", lambda: self._queue.submit(escalations))
        return rpb.SubmitResponse(results=[messages.submit_result(r) for r in results])

    def List(self, request: rpb.ListRequest, context: grpc.ServicerContext) -> rpb.ListResponse:
        items = _call(
            context,
            "List",
            lambda: self._queue.list_items(
                messages.state_filter(request.state),
                request.model,
                messages.tier_filter(request.tier),
                request.limit,
            ),
        )
        return rpb.ListResponse(items=[messages.item_message(item) for item in items])

    def Claim(self, request: rpb.ClaimRequest, context: grpc.ServicerContext) -> rpb.ClaimResponse:
        item = _call(
            context,
            "Claim",
            lambda: self._queue.claim(request.reviewer, request.model, request.lease_seconds),
        )
        return rpb.ClaimResponse(item=messages.item_message(item))

    def Resolve(
        self, request: rpb.ResolveRequest, context: grpc.ServicerContext
    ) -> rpb.ResolveResponse:
        item = _call(
            context, "Resolve", lambda: self._queue.resolve(messages.reviewer_verdict(request))
        )
        return rpb.ResolveResponse(item=messages.item_message(item))

    def Export(
        self, request: rpb.ExportRequest, context: grpc.ServicerContext
    ) -> Iterator[rpb.ReviewItem]:
        items = _call(
            context, "Export", lambda: self._queue.export(request.model, request.resolved_since)
        )
        while True:
            item = _call(context, "Export", lambda: next(items, None))
            if item is None:
                return
            yield messages.item_message(item)


def _call(context: grpc.ServicerContext, method: str, work: Callable[[], T]) -> T:
    try:
        return work()
    except HitlError as exc:
        _abort(context, method, exc)


def _abort(context: grpc.ServicerContext, method: str, exc: HitlError) -> NoReturn:
    code = status_of(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        log.error("review.failed", method=method, code=code.name, error=str(exc))
    context.abort(code, str(exc))
