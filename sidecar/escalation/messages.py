"""Escalation records to and from hitl.v1.Escalation messages: the review queue's
wire form, used by its server and by the forwarder's review-queue sink."""

from __future__ import annotations

from sidecar._proto.hitl.v1 import decision_pb2 as dpb
from sidecar._proto.hitl.v1 import review_pb2 as rpb
from sidecar.escalation.record import Escalation


def to_message(escalation: Escalation) -> rpb.Escalation:
    e = escalation
    return rpb.Escalation(
        escalation_id=e.escalation_id,
        request_id=e.request_id,
        model=e.model,
        model_version=e.model_version,
        domain=e.domain,
        tier=dpb.Tier.Value(f"TIER_{e.tier}") if e.tier else dpb.TIER_UNSPECIFIED,
        reason=dpb.Reason.Value(f"REASON_{e.reason}") if e.reason else dpb.REASON_UNSPECIFIED,
        rule_id=e.rule_id,
        predicted_class=e.predicted_class,
        predicted_label=e.predicted_label,
        calibrated_confidence=e.calibrated_confidence,
        policy_revision=e.policy_revision,
        calibration_version=e.calibration_version,
        experiment_arm=e.experiment_arm,
        degraded=e.degraded,
        input_ref=e.input_ref,
        trace_id=e.trace_id,
        created_at=e.created_at,
        context=e.context,
        string_attributes=e.string_attributes,
        numeric_attributes=e.numeric_attributes,
        logits=e.logits,
        input_kind=dpb.InputKind.Value(f"INPUT_KIND_{e.input_kind}"),
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
    )


def _name(full: str, prefix: str) -> str:
    """TIER_HUMAN_PRIMARY -> HUMAN_PRIMARY; an UNSPECIFIED value -> ''."""
    short = full.removeprefix(prefix)
    return "" if short == "UNSPECIFIED" else short
