"""The feedback log's results, records and datasets as the contract's messages."""

from __future__ import annotations

import json

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.dataset import Chosen, Dataset
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


def labels_message(labels: list[tuple[str, Chosen]]) -> fpb.LabelsResponse:
    return fpb.LabelsResponse(
        labels=[
            fpb.RequestLabel(
                request_id=request_id,
                class_index=label.class_index,
                source=label.source,
                received_at=label.received_at,
            )
            for request_id, label in labels
        ]
    )


CHUNK = 1 << 20  # bytes of a dataset's rows in one DatasetChunk


def dataset_chunks(dataset: Dataset) -> list[fpb.DatasetChunk]:
    """The manifest, then the rows in chunks of at most CHUNK bytes."""
    chunks = [fpb.DatasetChunk(manifest_json=json.dumps(dataset.manifest, sort_keys=True))]
    data = dataset.data
    chunks += [fpb.DatasetChunk(rows=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    return chunks
