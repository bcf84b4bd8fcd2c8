"""What makes a feedback event or a decision record unusable, named by its field. An
event's type says which value it carries; every text and map is bounded as Route's
are."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.core.validation import (
    MAX_LOGITS,
    MAX_NAME,
    MAX_REQUEST_ID,
    MAX_STRING_VALUE,
    check_attributes,
    check_context,
    check_labels,
    check_text,
)
from sidecar.errors import InvalidRequest
from sidecar.feedback.dataset import DEFAULT_SOURCES, SOURCES, STRATEGIES, TRUTH_SOURCES, Query
from sidecar.feedback.records import Known, Received

MAX_BATCH = 1000
Value = Literal["label", "rating", "signal", "preferred_over", "retracts"]
# The value each type carries (the oneof's field name).
VALUE_OF: Mapping[fpb.FeedbackType.ValueType, Value] = {
    fpb.FEEDBACK_OUTCOME: "label",
    fpb.FEEDBACK_EXPLICIT_CORRECTION: "label",
    fpb.FEEDBACK_REVIEW: "label",
    fpb.FEEDBACK_RATING: "rating",
    fpb.FEEDBACK_IMPLICIT: "signal",
    fpb.FEEDBACK_PREFERENCE: "preferred_over",
    fpb.FEEDBACK_RETRACTION: "retracts",
}
# The events a RETRACTION may withdraw (type names, as the log keeps them).
RETRACTABLE = frozenset({"OUTCOME", "REVIEW", "EXPLICIT_CORRECTION"})


def check_batch_size(size: int, field: str = "events") -> None:
    if not 0 < size <= MAX_BATCH:
        raise InvalidRequest(field, f"{size} {field}; 1 to {MAX_BATCH} per call")


def check_event(event: fpb.FeedbackEvent) -> None:
    check_text(event.feedback_id, "feedback_id", MAX_REQUEST_ID, required=True)
    check_text(event.request_id, "request_id", MAX_REQUEST_ID, required=True)
    check_text(event.model, "model", MAX_NAME, required=True)
    check_text(event.model_version, "model_version", MAX_NAME)
    check_text(event.source, "source", MAX_NAME)
    check_context(event.user_context)
    if not (math.isfinite(event.occurred_at) and event.occurred_at >= 0):
        raise InvalidRequest("occurred_at", "must be finite Unix seconds, or 0 for now")
    expected = VALUE_OF.get(event.type)
    if expected is None:
        raise InvalidRequest("type", f"must be one of {', '.join(_type_names())}")
    if not event.HasField(expected):
        name = fpb.FeedbackType.Name(event.type)
        given = event.WhichOneof("value") or "none"
        raise InvalidRequest(expected, f"a {name} event carries {expected}, not {given}")
    _check_value(event, expected)


def _check_value(event: fpb.FeedbackEvent, kind: Value) -> None:
    if kind == "label":
        label = event.label
        if not label.HasField("class_index") and not label.name:
            raise InvalidRequest("label", "needs class_index, name or both")
        if label.HasField("class_index") and label.class_index < 0:
            raise InvalidRequest("label.class_index", "must be >= 0")
        check_text(label.name, "label.name", MAX_STRING_VALUE)
    elif kind == "rating":
        if not (math.isfinite(event.rating) and 0.0 <= event.rating <= 1.0):
            raise InvalidRequest("rating", f"must be in [0, 1], got {event.rating}")
    elif kind == "signal":
        check_text(event.signal.name, "signal.name", MAX_NAME, required=True)
        if not math.isfinite(event.signal.value):
            raise InvalidRequest("signal.value", "must be finite")
    elif kind == "retracts":
        check_text(event.retracts, "retracts", MAX_REQUEST_ID, required=True)
        if event.retracts == event.feedback_id:
            raise InvalidRequest("retracts", "names the event's own feedback_id")
    else:
        check_text(event.preferred_over, "preferred_over", MAX_REQUEST_ID, required=True)
        if event.preferred_over == event.request_id:
            raise InvalidRequest("preferred_over", "names the event's own request_id")


def check_decision(record: fpb.DecisionRecord) -> None:
    """A decision record's bounds: what Route would have accepted and decided."""
    check_text(record.request_id, "request_id", MAX_REQUEST_ID, required=True)
    check_text(record.model, "model", MAX_NAME, required=True)
    for name in ("model_version", "domain", "rule_id", "calibration_version", "experiment_arm"):
        check_text(getattr(record, name), name, MAX_NAME)
    check_text(record.predicted_label, "predicted_label", MAX_STRING_VALUE)
    check_text(record.trace_id, "trace_id", MAX_NAME)
    check_text(record.escalation_id, "escalation_id", MAX_NAME)
    for name, enum in (("tier", dpb.Tier), ("reason", dpb.Reason)):
        if getattr(record, name) not in enum.values() or not getattr(record, name):
            raise InvalidRequest(name, f"{getattr(record, name)} is not a known {name}")
    logits = record.logits
    if not 0 < len(logits) <= MAX_LOGITS:
        raise InvalidRequest("logits", f"{len(logits)} values; 1 to {MAX_LOGITS}")
    if not all(math.isfinite(x) for x in logits):
        raise InvalidRequest("logits", "holds NaN or infinity")
    if not 0 <= record.predicted_class < len(logits):
        raise InvalidRequest(
            "predicted_class", f"{record.predicted_class} is not one of the {len(logits)} classes"
        )
    check_labels(record.labels, len(record.logits))
    _check_predicted_label(record)
    check_attributes(record.string_attributes, record.numeric_attributes)
    if not 0.0 <= record.calibrated_confidence <= 1.0:
        raise InvalidRequest("calibrated_confidence", "must be in [0, 1]")
    if not 0.0 < record.inclusion_probability <= 1.0:
        raise InvalidRequest("inclusion_probability", "must be in (0, 1]")
    if not (math.isfinite(record.decided_at) and record.decided_at > 0):
        raise InvalidRequest("decided_at", "must be Unix seconds")


def _check_predicted_label(record: fpb.DecisionRecord) -> None:
    """A decision's predicted_label, when it has labels, is its predicted class's."""
    if not (record.labels and record.predicted_label):
        return
    label = record.labels[record.predicted_class]
    if record.predicted_label != label:
        raise InvalidRequest(
            "predicted_label",
            f"{record.predicted_label!r} is not class {record.predicted_class}'s label {label!r}",
        )


def label_class(label: fpb.Label, classes: Known, request_id: str) -> int:
    """The class a label names, checked against the classes of its request's decision
    (when known): a class index beyond them, a name not among their labels, or a
    name that is not its class index's label is refused, naming the field. -1 when
    it cannot be told: a name with no decision, or one whose labels are not known."""
    about = f"the decision for request_id {request_id!r}"
    index = label.class_index if label.HasField("class_index") else -1
    if classes.count and index >= classes.count:
        raise InvalidRequest(
            "label.class_index", f"{index} is not one of the {classes.count} classes of {about}"
        )
    if not (label.name and classes.labels):
        return index
    if label.name not in classes.labels:
        raise InvalidRequest("label.name", f"{label.name!r} is not one of the labels of {about}")
    named = classes.labels.index(label.name)
    if index >= 0 and index != named:
        raise InvalidRequest(
            "label.name", f"{label.name!r} is class {named} of {about}, not class {index}"
        )
    return named


def check_retraction(event: fpb.FeedbackEvent, sender: str, retracted: Received | None) -> None:
    """A RETRACTION may withdraw only a label event already recorded, about the same
    request, sent by the same principal; InvalidRequest naming retracts otherwise."""
    about = f"feedback_id {event.retracts!r}"
    if retracted is None:
        raise InvalidRequest("retracts", f"{about} is not recorded: there is nothing to retract")
    if retracted.type not in RETRACTABLE:
        raise InvalidRequest("retracts", f"{about} is a {retracted.type} event, not a label")
    if retracted.request_id != event.request_id:
        raise InvalidRequest(
            "retracts", f"{about} is about request_id {retracted.request_id!r}, not this one"
        )
    if retracted.sender != sender:
        raise InvalidRequest("retracts", f"{about} was sent by another principal")


def export_query(request: fpb.ExportDatasetRequest, now: float) -> Query:
    """The dataset query an Export asks for (until 0: now); InvalidRequest naming the
    field otherwise."""
    check_text(request.model, "model", MAX_NAME, required=True)
    for name in ("since", "until"):
        if not (math.isfinite(getattr(request, name)) and getattr(request, name) >= 0):
            raise InvalidRequest(name, "must be finite Unix seconds")
    until = request.until or now
    if until <= request.since:
        raise InvalidRequest("until", f"{until} is not after since ({request.since})")
    strategy = request.strategy or "all"
    if strategy not in STRATEGIES:
        raise InvalidRequest("strategy", f"{strategy!r}; one of {', '.join(STRATEGIES)}")
    sources = tuple(request.label_sources) or DEFAULT_SOURCES
    if not set(sources) <= SOURCES.keys() or len(set(sources)) != len(sources):
        raise InvalidRequest("label_sources", f"name each of {', '.join(SOURCES)} at most once")
    return Query(request.model, request.since, until, strategy, sources)


def labels_query(request: fpb.LabelsRequest) -> tuple[list[str], tuple[str, ...]]:
    """The request_ids (deduplicated, in order) and the label sources a Labels call
    asks for (empty: TRUTH_SOURCES); InvalidRequest naming the field otherwise."""
    check_batch_size(len(request.request_ids), "request_ids")
    for request_id in request.request_ids:
        check_text(request_id, "request_ids", MAX_REQUEST_ID, required=True)
    sources = tuple(request.label_sources) or TRUTH_SOURCES
    if "review" in sources:
        raise InvalidRequest(
            "label_sources",
            "review is the queue's own labels, not ground truth for them;"
            f" name {' or '.join(TRUTH_SOURCES)}",
        )
    if not set(sources) <= set(TRUTH_SOURCES) or len(set(sources)) != len(sources):
        raise InvalidRequest(
            "label_sources", f"name each of {', '.join(TRUTH_SOURCES)} at most once"
        )
    return list(dict.fromkeys(request.request_ids)), sources


def _type_names() -> list[str]:
    return [fpb.FeedbackType.Name(t) for t in VALUE_OF]
