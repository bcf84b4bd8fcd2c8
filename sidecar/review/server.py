"""The ReviewQueue servicer: identify and authorise the caller, then proto in,
ReviewQueue calls, proto out. Nothing else.

Every call passes the gate (``sidecar.gate``): the caller is identified by its
credential and authorised by role (``access``); who a claim or a verdict is for
comes from that credential (a lead's bulk accept and revert, too). A refused call is
logged and counted like any other outcome. The server is gRPC's thread-pool server:
every store call blocks on its database, and a review queue's traffic (forwarder
batches, people clicking) needs no event loop."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.auth import Principal
from sidecar.errors import InvalidRequest
from sidecar.gate import Gate
from sidecar.review import messages
from sidecar.review.access import ReviewRole, check_method, reviewer_for, sees_answers
from sidecar.review.bulk import BulkFilter
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.queue import ReviewQueue


class ReviewQueueServicer(rpb_grpc.ReviewQueueServicer):
    def __init__(self, queue: ReviewQueue, metrics: ReviewMetrics | None = None) -> None:
        self._queue = queue
        self._gate = Gate(
            "review", queue.store, check_method, metrics.calls if metrics is not None else None
        )

    def Submit(
        self, request: rpb.SubmitRequest, context: grpc.ServicerContext
    ) -> rpb.SubmitResponse:
        def work(_: Principal) -> rpb.SubmitResponse:
            escalations = [messages.to_escalation(m) for m in request.escalations]
            results = self._queue.submit(escalations)
            return rpb.SubmitResponse(results=[messages.submit_result(r) for r in results])

        return self._gate.call(context, "Submit", work)

    def List(self, request: rpb.ListRequest, context: grpc.ServicerContext) -> rpb.ListResponse:
        def work(_: Principal) -> rpb.ListResponse:
            items = self._queue.list_items(
                messages.state_filter(request.state),
                request.model,
                messages.tier_filter(request.tier),
                request.limit,
            )
            return rpb.ListResponse(items=[messages.item_message(item, True) for item in items])

        return self._gate.call(context, "List", work)

    def Claim(self, request: rpb.ClaimRequest, context: grpc.ServicerContext) -> rpb.ClaimResponse:
        def work(principal: Principal) -> rpb.ClaimResponse:
            reviewer, acted_by = reviewer_for(principal, request.reviewer)
            lead = principal.has(ReviewRole.LEAD)
            item = self._queue.claim(reviewer, request.model, request.lease_seconds, acted_by, lead)
            return rpb.ClaimResponse(item=messages.item_message(item, sees_answers(principal)))

        return self._gate.call(context, "Claim", work)

    def Resolve(
        self, request: rpb.ResolveRequest, context: grpc.ServicerContext
    ) -> rpb.ResolveResponse:
        def work(principal: Principal) -> rpb.ResolveResponse:
            reviewer, acted_by = reviewer_for(principal, request.reviewer)
            lead = principal.has(ReviewRole.LEAD)
            item = self._queue.resolve(messages.reviewer_verdict(request, reviewer, acted_by, lead))
            return rpb.ResolveResponse(item=messages.item_message(item, sees_answers(principal)))

        return self._gate.call(context, "Resolve", work)

    def Release(
        self, request: rpb.ReleaseRequest, context: grpc.ServicerContext
    ) -> rpb.ReleaseResponse:
        def work(principal: Principal) -> rpb.ReleaseResponse:
            reviewer, acted_by = reviewer_for(principal, request.reviewer)
            item = self._queue.release(request.escalation_id, reviewer, acted_by)
            return rpb.ReleaseResponse(item=messages.item_message(item, sees_answers(principal)))

        return self._gate.call(context, "Release", work)

    def BulkAccept(
        self, request: rpb.BulkAcceptRequest, context: grpc.ServicerContext
    ) -> rpb.BulkAcceptResponse:
        def work(principal: Principal) -> rpb.BulkAcceptResponse:
            if not request.HasField("min_confidence"):
                raise InvalidRequest("min_confidence", "a bulk accept needs the lowest confidence")
            wanted = BulkFilter(
                model=request.model,
                min_confidence=request.min_confidence,
                rule_id=request.rule_id,
                tier=messages.tier_filter(request.tier),
                limit=request.limit,
            )
            done = self._queue.bulk_accept(principal, wanted, request.dry_run)
            return rpb.BulkAcceptResponse(
                batch_id=done.batch_id,
                escalation_ids=[item.escalation_id for item in done.items],
                dry_run=done.dry_run,
            )

        return self._gate.call(context, "BulkAccept", work)

    def Revert(
        self, request: rpb.RevertRequest, context: grpc.ServicerContext
    ) -> rpb.RevertResponse:
        def work(principal: Principal) -> rpb.RevertResponse:
            item = self._queue.revert(principal, request.escalation_id, request.reason)
            return rpb.RevertResponse(item=messages.item_message(item, True))

        return self._gate.call(context, "Revert", work)

    def Export(
        self, request: rpb.ExportRequest, context: grpc.ServicerContext
    ) -> Iterator[rpb.ReviewItem]:
        items = self._gate.call(
            context,
            "Export",
            lambda _: self._queue.export(request.model, request.resolved_since),
        )
        while True:
            item = self._gate.guarded(context, "Export", lambda: next(items, None))
            if item is None:
                return
            yield messages.item_message(item, True)
