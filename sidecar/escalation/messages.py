"""Escalation records to and from hitl.v1.Escalation messages: the review queue's
wire form, used by its server and by the forwarder's review-queue sink; and records
as the feedback service's messages (a decision from an escalation or a sampled
automated decision, an outcome), for the feedback sink."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from sidecar.escalation.record import Escalation

V = TypeVar("V")


def to_message(escalation: Escalation) -> rpb.Escalation:
    return record_message(escalation.to_dict())


def record_message(record: Mapping[str, Any]) -> rpb.Escalation:
    """The message for an escalation record: Escalation.to_dict's fields, or the same
    decoded from the spool's JSON, as the forwarder reads it (unknown keys from a
    newer writer are ignored; the fields with defaults may be absent)."""
    r = record
    return rpb.Escalation(
        escalation_id=r["escalation_id"],
        input_ref=r["input_ref"],
        created_at=r["created_at"],
        context=r.get("context"),
        string_attributes=r.get("string_attributes"),
        numeric_attributes=r.get("numeric_attributes"),
        labels=r.get("labels"),
        **_decided(r),
    )


LabelsOf = Callable[[str, int], tuple[str, ...]]
"""A model's class labels under a policy revision; () when they are not known."""


def with_labels(record: Mapping[str, Any], labels_of: LabelsOf) -> Mapping[str, Any]:
    """A decision's record with its model's class labels, looked up when it is
    forwarded (so Route never pays for them), if the policy it was decided under is
    still in force; an outcome's record, or one whose labels are not known, as it is."""
    if record.get("kind") == "outcome" or record.get("labels"):
        return record
    labels = labels_of(str(record["model"]), int(record["policy_revision"]))
    return {**record, "labels": labels} if labels else record


def decision_message(record: Mapping[str, Any]) -> fpb.DecisionRecord:
    """The decision an escalation record (or a sampled automated decision's record,
    which has the same fields and its inclusion_probability) holds."""
    return fpb.DecisionRecord(
        decided_at=record["created_at"],
        inclusion_probability=record.get("inclusion_probability", 1.0),
        escalation_id=record.get("escalation_id", ""),
        labels=record.get("labels", ()),
        span_id=record.get("span_id", ""),
        string_attributes=record.get("string_attributes", {}),
        numeric_attributes=record.get("numeric_attributes", {}),
        **_decided(record),
    )


def _decided(r: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an escalation and a decision record share, as either message's."""
    return {
        "request_id": r["request_id"],
        "model": r["model"],
        "model_version": r["model_version"],
        "domain": r["domain"],
        "tier": _TIER[r["tier"]],
        "reason": _REASON[r["reason"]],
        "rule_id": r["rule_id"],
        "predicted_class": r["predicted_class"],
        "predicted_label": r["predicted_label"],
        "calibrated_confidence": r["calibrated_confidence"],
        "policy_revision": r["policy_revision"],
        "calibration_version": r["calibration_version"],
        "experiment_arm": r["experiment_arm"],
        "degraded": r["degraded"],
        "trace_id": r["trace_id"],
        "logits": r.get("logits"),
        "input_kind": _INPUT_KIND[r.get("input_kind", "LOGITS")],
    }


def outcome_message(record: Mapping[str, Any]) -> fpb.FeedbackEvent:
    """The OUTCOME event of an outcome record (``decisions.DecisionStream.outcome``)."""
    r = record
    label = fpb.Label(name=r["true_label"])
    if r["true_class"] is not None:
        label.class_index = r["true_class"]
    return fpb.FeedbackEvent(
        feedback_id=r["key"],
        request_id=r["request_id"],
        model=r["model"],
        type=fpb.FEEDBACK_OUTCOME,
        label=label,
        source=r["source"],
        occurred_at=r["occurred_at"],
    )


def from_message(message: rpb.Escalation) -> Escalation:
    m = message
    return Escalation(
        escalation_id=m.escalation_id,
        request_id=m.request_id,
        model=m.model,
        model_version=m.model_version,
        domain=m.domain,
        tier=_name(dpb.Tier.Name(m.tier), "TIER_"),
        reason=_name(dpb.Reason.Name(m.reason), "REASON_"),
        rule_id=m.rule_id,
        predicted_class=m.predicted_class,
        predicted_label=m.predicted_label,
        calibrated_confidence=m.calibrated_confidence,
        policy_revision=m.policy_revision,
        calibration_version=m.calibration_version,
        experiment_arm=m.experiment_arm,
        degraded=m.degraded,
        input_ref=m.input_ref,
        trace_id=m.trace_id,
        created_at=m.created_at,
        context=dict(m.context),
        string_attributes=dict(m.string_attributes),
        numeric_attributes=dict(m.numeric_attributes),
        logits=list(m.logits),
        input_kind=_name(dpb.InputKind.Name(m.input_kind), "INPUT_KIND_") or "LOGITS",
        labels=list(m.labels),
    )


def _values(items: list[tuple[str, V]], prefix: str) -> dict[str, V]:
    """An enum's values by short name (TIER_HUMAN_PRIMARY -> HUMAN_PRIMARY), and ""
    for its UNSPECIFIED value, as _name gives them."""
    return {_name(name, prefix): value for name, value in items}


def _name(full: str, prefix: str) -> str:
    """TIER_HUMAN_PRIMARY -> HUMAN_PRIMARY; an UNSPECIFIED value -> ''."""
    short = full.removeprefix(prefix)
    return "" if short == "UNSPECIFIED" else short


_TIER = _values(dpb.Tier.items(), "TIER_")
_REASON = _values(dpb.Reason.items(), "REASON_")
_INPUT_KIND = _values(dpb.InputKind.items(), "INPUT_KIND_")
