"""The feedback log's results and records as the contract's messages."""

from __future__ import annotations

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.ingest import History, Result
from sidecar.feedback.records import decision_of, event_of


def result_message(result: Result) -> fpb.RecordResult:
    return fpb.RecordResult(
        feedback_id=result.key,
        status=fpb.RecordResult.Status.Value(result.status),
        message=result.message,
    )


def decision_result_message(result: Result) -> fpb.DecisionResult:
    return fpb.DecisionResult(
        request_id=result.key,
        status=fpb.RecordResult.Status.Value(result.status),
        message=result.message,
    )


def history_message(history: History) -> fpb.RequestHistory:
    message = fpb.RequestHistory(
        request_id=history.request_id,
        events=[
            fpb.ReceivedEvent(event=event_of(e), sender=e.sender, received_at=e.received_at)
            for e in history.events
        ],
    )
    if history.decision is not None:
        message.decision.CopyFrom(decision_of(history.decision))
        message.decision_sender = history.decision.sender
    return message
