"""A feedback event, and a decision, as the log keeps them: the message exactly as
sent, in one canonical JSON text (protobuf's JSON mapping, keys sorted), beside who
sent it and when it arrived. Two sends of one ``feedback_id`` (of a decision: one
``request_id``) are the same when their texts are equal."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import Message

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
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
    label_class: int = -1  # a label's class index (-1: no label, or one by name only)
    retracts: str = ""  # of a RETRACTION: the feedback_id of the label it withdraws


def received(
    event: fpb.FeedbackEvent, sender: str, now: float, label_class: int | None = None
) -> Received:
    """label_class: the class the event's label names, as found against its decision
    (default: the label's class index; -1 for none)."""
    if label_class is None:
        has_class = event.HasField("label") and event.label.HasField("class_index")
        label_class = event.label.class_index if has_class else -1
    return Received(
        feedback_id=event.feedback_id,
        request_id=event.request_id,
        model=event.model,
        type=type_name(event.type),
        event=canonical(event),
        sender=sender,
        received_at=now,
        label_class=label_class,
        retracts=event.retracts if event.type == fpb.FEEDBACK_RETRACTION else "",
    )


@dataclass(frozen=True, slots=True)
class Decided:
    request_id: str
    model: str
    decision: str  # canonical JSON of the DecisionRecord as sent
    classes: int  # the model's class count: its logits' length
    inclusion_probability: float
    decided_at: float
    sender: str
    received_at: float
    tier: str = ""  # the Tier's name without its prefix: AUTOMATED, HUMAN_ASSISTED, ...
    predicted_class: int = -1
    labels: str = ""  # the model's class labels as a JSON array ("": not known)
    trace_id: str = ""  # the Route call's span
    span_id: str = ""


def decided(record: fpb.DecisionRecord, sender: str, now: float) -> Decided:
    return Decided(
        request_id=record.request_id,
        model=record.model,
        decision=canonical(record),
        classes=len(record.logits),
        inclusion_probability=record.inclusion_probability,
        decided_at=record.decided_at,
        sender=sender,
        received_at=now,
        tier=dpb.Tier.Name(record.tier).removeprefix("TIER_"),
        predicted_class=record.predicted_class,
        labels=json.dumps(list(record.labels)) if record.labels else "",
        trace_id=record.trace_id,
        span_id=record.span_id,
    )


@dataclass(frozen=True, slots=True)
class Known:
    """What the log knows of a request's decision when an event about it arrives: its
    classes, which a label is checked against (how many, 0: no decision yet, and their
    labels when the sidecar sent them); when it was decided; the Route call's span."""

    count: int = 0
    labels: tuple[str, ...] = ()
    decided_at: float = 0.0
    trace_id: str = ""
    span_id: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """One model's and tier's decisions over a window: how many, how many got a label,
    how many a label that differs from the prediction."""

    model: str
    tier: str
    decisions: int
    labelled: int
    overridden: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event no decision claimed within the join window."""

    event: Received
    reason: str
    dead_at: float


def canonical(message: Message) -> str:
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_of(record: Received) -> fpb.FeedbackEvent:
    return json_format.Parse(record.event, fpb.FeedbackEvent())


def decision_of(record: Decided) -> fpb.DecisionRecord:
    return json_format.Parse(record.decision, fpb.DecisionRecord())


def type_name(event_type: fpb.FeedbackType.ValueType) -> str:
    return fpb.FeedbackType.Name(event_type).removeprefix("FEEDBACK_")
