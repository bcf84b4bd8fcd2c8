"""The escalation record: what a reviewer needs to act on a decision and to find its
trace and audit record (with the model's class labels, once the forwarder has added
them), and what the calibrators need once it is labelled (the logits as sent). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, field, fields
from typing import Any

from sidecar.core.values import value


@value
class Escalation:
    escalation_id: str
    request_id: str
    model: str
    model_version: str
    domain: str
    tier: str  # Tier name: HUMAN_PRIMARY, HUMAN_ASSISTED, AUTOMATED (an audit sample)
    reason: str  # Reason name: THRESHOLD, RULE, AUDIT_SAMPLE, FALLBACK_...
    rule_id: str
    predicted_class: int
    predicted_label: str
    calibrated_confidence: float
    policy_revision: int
    calibration_version: str
    experiment_arm: str
    degraded: bool
    input_ref: str
    trace_id: str
    created_at: float
    # Shared with the request they came from, not copied: neither is changed after.
    context: Mapping[str, str] = field(default_factory=dict)
    string_attributes: Mapping[str, str] = field(default_factory=dict)
    numeric_attributes: Mapping[str, float] = field(default_factory=dict)
    logits: list[float] = field(default_factory=list)
    input_kind: str = "LOGITS"  # InputKind name: LOGITS or PROBABILITIES
    span_id: str = ""  # the Route call's span, as the decision record's
    # The model's class labels under policy_revision, one per logit. Route never
    # fills them (it would pay for them on every escalation): the review queue's sink
    # adds them when it sends (``messages.with_labels``); empty when not known.
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every value, which was
        # the largest single cost of an escalated Route.
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Escalation:
        """The inverse of to_dict; unknown keys are ignored (newer writers)."""
        return cls(**{name: data[name] for name in FIELDS if name in data})


FIELDS = tuple(f.name for f in fields(Escalation))
# What a record must hold to be an escalation; the rest have defaults.
REQUIRED = frozenset(
    f.name for f in fields(Escalation) if f.default is MISSING and f.default_factory is MISSING
)
