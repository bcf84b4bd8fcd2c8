"""The Feedback servicer over gRPC: every call passes the gate (``sidecar.gate``: the
caller identified by its credential, the method authorised for its roles), then the
method's handler (``handlers``). Who sent an event is the principal its credential
names, never a field of the event. Each call has its span (``call_spans``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.feedback.handlers import HANDLERS
from sidecar.feedback.ingest import FeedbackLog
from sidecar.gate import Gate
from sidecar.telemetry.call_spans import CallSpans


class FeedbackServicer(fpb_grpc.FeedbackServicer):
    def __init__(self, feedback: FeedbackLog, gate: Gate, spans: CallSpans) -> None:
        self._feedback = feedback
        self._gate = gate
        self._spans = spans

    def Record(self, request: fpb.FeedbackEvent, context: grpc.ServicerContext) -> fpb.RecordResult:
        return self._call(context, "Record", request)  # type: ignore[no-any-return]

    def RecordBatch(
        self, request: fpb.RecordBatchRequest, context: grpc.ServicerContext
    ) -> fpb.RecordBatchResponse:
        return self._call(context, "RecordBatch", request)  # type: ignore[no-any-return]

    def RecordDecisions(
        self, request: fpb.RecordDecisionsRequest, context: grpc.ServicerContext
    ) -> fpb.RecordDecisionsResponse:
        return self._call(context, "RecordDecisions", request)  # type: ignore[no-any-return]

    def Get(self, request: fpb.GetRequest, context: grpc.ServicerContext) -> fpb.RequestHistory:
        return self._call(context, "Get", request)  # type: ignore[no-any-return]

    def Labels(
        self, request: fpb.LabelsRequest, context: grpc.ServicerContext
    ) -> fpb.LabelsResponse:
        return self._call(context, "Labels", request)  # type: ignore[no-any-return]

    def Export(
        self, request: fpb.ExportDatasetRequest, context: grpc.ServicerContext
    ) -> Iterator[fpb.DatasetChunk]:
        yield from self._call(context, "Export", request)

    def _call(self, context: grpc.ServicerContext, method: str, request: Any) -> Any:
        handler = HANDLERS[method]
        with self._spans.span("grpc", method, context.invocation_metadata()):
            return self._gate.call(context, method, lambda p: handler(self._feedback, p, request))
