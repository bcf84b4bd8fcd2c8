"""A feedback event as the log keeps it: the event exactly as sent, in one canonical
JSON text (protobuf's JSON mapping, keys sorted), beside who sent it and when it
arrived. Two sends of one ``feedback_id`` are the same event when their texts are
equal."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from google.protobuf import json_format

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb


class Outcome(enum.StrEnum):
    """What storing an event did (RecordResult's status)."""

    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"  # the same event again: nothing changed
    CONFLICT = "CONFLICT"  # another event under this feedback_id: the stored one stays


@dataclass(frozen=True, slots=True)
class Received:
    feedback_id: str
    request_id: str
    model: str
    type: str  # the FeedbackType's name without its prefix: OUTCOME, RATING, ...
    event: str  # canonical JSON of the FeedbackEvent as sent
    sender: str  # the principal whose credential sent it
    received_at: float


def received(event: fpb.FeedbackEvent, sender: str, now: float) -> Received:
    return Received(
        feedback_id=event.feedback_id,
        request_id=event.request_id,
        model=event.model,
        type=type_name(event.type),
        event=canonical(event),
        sender=sender,
        received_at=now,
    )


def canonical(event: fpb.FeedbackEvent) -> str:
    document = json_format.MessageToDict(event, preserving_proto_field_name=True)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_of(record: Received) -> fpb.FeedbackEvent:
    return json_format.Parse(record.event, fpb.FeedbackEvent())


def type_name(event_type: fpb.FeedbackType.ValueType) -> str:
    return fpb.FeedbackType.Name(event_type).removeprefix("FEEDBACK_")
