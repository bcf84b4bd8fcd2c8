"""What each Feedback method does for an admitted principal, message in, message
out (a list of messages for a streaming method): one body per method, whichever
transport (gRPC in ``server``, HTTP in ``http``) carried the call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.messages import (
    dataset_chunks,
    decision_result_message,
    history_message,
    labels_message,
    result_message,
)

# A unary method's answer, or a streaming method's answers in order.
Handler = Callable[[FeedbackLog, Principal, Any], Message | list[Message]]


def _record(log: FeedbackLog, principal: Principal, request: fpb.FeedbackEvent) -> Message:
    return result_message(log.record(principal, request))


def _record_batch(
    log: FeedbackLog, principal: Principal, request: fpb.RecordBatchRequest
) -> Message:
    results = log.record_batch(principal, request.events)
    return fpb.RecordBatchResponse(results=[result_message(r) for r in results])


def _record_decisions(
    log: FeedbackLog, principal: Principal, request: fpb.RecordDecisionsRequest
) -> Message:
    results = log.record_decisions(principal, request.decisions)
    return fpb.RecordDecisionsResponse(results=[decision_result_message(r) for r in results])


def _get(log: FeedbackLog, _principal: Principal, request: fpb.GetRequest) -> Message:
    return history_message(log.history(request.request_id))


def _labels(log: FeedbackLog, _principal: Principal, request: fpb.LabelsRequest) -> Message:
    return labels_message(log.labels(request))


def _export(
    log: FeedbackLog, _principal: Principal, request: fpb.ExportDatasetRequest
) -> list[Message]:
    return list[Message](dataset_chunks(log.export(request)))


HANDLERS: Mapping[str, Handler] = {
    "Record": _record,
    "RecordBatch": _record_batch,
    "RecordDecisions": _record_decisions,
    "Get": _get,
    "Labels": _labels,
    "Export": _export,
}
