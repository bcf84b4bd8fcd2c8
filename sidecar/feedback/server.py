"""The Feedback servicer: every call passes the gate (``sidecar.gate``: the caller
identified by its credential, the method authorised for its roles), then proto in,
FeedbackLog calls, proto out. Who sent an event is the principal its credential
names, never a field of the event."""

from __future__ import annotations

import grpc

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.auth import Principal
from sidecar.feedback.access import check_method
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.messages import (
    decision_result_message,
    history_message,
    result_message,
)
from sidecar.feedback.metrics import FeedbackMetrics
from sidecar.gate import Gate


class FeedbackServicer(fpb_grpc.FeedbackServicer):
    def __init__(self, feedback: FeedbackLog, metrics: FeedbackMetrics | None = None) -> None:
        self._feedback = feedback
        calls = metrics.calls if metrics is not None else None
        self._gate = Gate("feedback", feedback.store, check_method, calls)

    def Record(self, request: fpb.FeedbackEvent, context: grpc.ServicerContext) -> fpb.RecordResult:
        def work(principal: Principal) -> fpb.RecordResult:
            return result_message(self._feedback.record(principal, request))

        return self._gate.call(context, "Record", work)

    def RecordBatch(
        self, request: fpb.RecordBatchRequest, context: grpc.ServicerContext
    ) -> fpb.RecordBatchResponse:
        def work(principal: Principal) -> fpb.RecordBatchResponse:
            results = self._feedback.record_batch(principal, request.events)
            return fpb.RecordBatchResponse(results=[result_message(r) for r in results])

        return self._gate.call(context, "RecordBatch", work)

    def RecordDecisions(
        self, request: fpb.RecordDecisionsRequest, context: grpc.ServicerContext
    ) -> fpb.RecordDecisionsResponse:
        def work(principal: Principal) -> fpb.RecordDecisionsResponse:
            results = self._feedback.record_decisions(principal, request.decisions)
            return fpb.RecordDecisionsResponse(
                results=[decision_result_message(r) for r in results]
            )

        return self._gate.call(context, "RecordDecisions", work)

    def Get(self, request: fpb.GetRequest, context: grpc.ServicerContext) -> fpb.RequestHistory:
        def work(_: Principal) -> fpb.RequestHistory:
            return history_message(self._feedback.history(request.request_id))

        return self._gate.call(context, "Get", work)
