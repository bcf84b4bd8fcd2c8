"""The ReviewQueue servicer: identify and authorise the caller, then proto in,
ReviewQueue calls, proto out. Nothing else.

Every call is identified by its credential (``sidecar.auth``) and authorised by role
(``access``); who a claim or a verdict is for comes from that credential. A refused
call is logged and counted like any other outcome. The server is gRPC's thread-pool
server: every store call blocks on its database, and a review queue's traffic
(forwarder batches, people clicking) needs no event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.auth import Principal, identify
from sidecar.errors import HitlError
from sidecar.review import messages
from sidecar.review.access import check_method, reviewer_for
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.queue import ReviewQueue
from sidecar.serving import caller_credentials, details, status_of

log = structlog.get_logger("hitl.review")

T = TypeVar("T")


class ReviewQueueServicer(rpb_grpc.ReviewQueueServicer):
    def __init__(self, queue: ReviewQueue, metrics: ReviewMetrics | None = None) -> None:
        self._queue = queue
        self._metrics = metrics

    def Submit(
        self, request: rpb.SubmitRequest, context: grpc.ServicerContext
    ) -> rpb.SubmitResponse:
        def work(_: Principal) -> rpb.SubmitResponse:
            escalations = [messages.to_escalation(m) for m in request.escalations]
            results = self._queue.submit(escalations)
            return rpb.SubmitResponse(results=[messages.submit_result(r) for r in results])

        return self._call(context, "Submit", work)

    def List(self, request: rpb.ListRequest, context: grpc.ServicerContext) -> rpb.ListResponse:
        def work(_: Principal) -> rpb.ListResponse:
            items = self._queue.list_items(
                messages.state_filter(request.state),
                request.model,
                messages.tier_filter(request.tier),
                request.limit,
            )
            return rpb.ListResponse(items=[messages.item_message(item) for item in items])

        return self._call(context, "List", work)

    def Claim(self, request: rpb.ClaimRequest, context: grpc.ServicerContext) -> rpb.ClaimResponse:
        def work(principal: Principal) -> rpb.ClaimResponse:
            reviewer, acted_by = reviewer_for(principal, request.reviewer)
            item = self._queue.claim(reviewer, request.model, request.lease_seconds, acted_by)
            return rpb.ClaimResponse(item=messages.item_message(item))

        return self._call(context, "Claim", work)

    def Resolve(
        self, request: rpb.ResolveRequest, context: grpc.ServicerContext
    ) -> rpb.ResolveResponse:
        def work(principal: Principal) -> rpb.ResolveResponse:
            reviewer, acted_by = reviewer_for(principal, request.reviewer)
            item = self._queue.resolve(messages.reviewer_verdict(request, reviewer, acted_by))
            return rpb.ResolveResponse(item=messages.item_message(item))

        return self._call(context, "Resolve", work)

    def Export(
        self, request: rpb.ExportRequest, context: grpc.ServicerContext
    ) -> Iterator[rpb.ReviewItem]:
        items = self._call(
            context,
            "Export",
            lambda _: self._queue.export(request.model, request.resolved_since),
        )
        while True:
            item = _guarded(context, "Export", lambda: next(items, None))
            if item is None:
                return
            yield messages.item_message(item)

    def _call(
        self, context: grpc.ServicerContext, method: str, work: Callable[[Principal], T]
    ) -> T:
        """Identify and authorise the caller, then run work for it; count the outcome."""
        principal: Principal | None = None
        try:
            token, subject = caller_credentials(context)
            store = self._queue.store
            principal = identify(
                token, subject, store.principal_for_token, store.principal_for_subject
            )
            check_method(principal, method)
            result = work(principal)
        except HitlError as exc:
            code = status_of(exc)
            self._count(method, code.name)
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.warning(
                    "review.refused",
                    method=method,
                    code=code.name,
                    principal=principal.name if principal else "",
                    peer=context.peer(),
                    error=str(exc),
                )
            _abort(context, method, exc)
        self._count(method, "OK")
        return result

    def _count(self, method: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.calls.add(1, {"method": method, "outcome": outcome})


def _guarded(context: grpc.ServicerContext, method: str, work: Callable[[], T]) -> T:
    try:
        return work()
    except HitlError as exc:
        _abort(context, method, exc)


def _abort(context: grpc.ServicerContext, method: str, exc: HitlError) -> NoReturn:
    code = status_of(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        log.error("review.failed", method=method, code=code.name, error=str(exc))
    context.abort(code, details(str(exc)))
