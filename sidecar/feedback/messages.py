"""The feedback log's results and records as the contract's messages."""

from __future__ import annotations

from collections.abc import Sequence

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.ingest import Result
from sidecar.feedback.records import Received, event_of


def result_message(result: Result) -> fpb.RecordResult:
    return fpb.RecordResult(
        feedback_id=result.feedback_id,
        status=fpb.RecordResult.Status.Value(result.status),
        message=result.message,
    )


def history_message(request_id: str, events: Sequence[Received]) -> fpb.RequestHistory:
    return fpb.RequestHistory(
        request_id=request_id,
        events=[
            fpb.ReceivedEvent(event=event_of(e), sender=e.sender, received_at=e.received_at)
            for e in events
        ],
    )
