"""What the monitor reads from the feedback log: one recorded decision and, when one
has arrived, its label. Pure: the store's rows are turned into these at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Observation:
    """One recorded decision (every escalated one, a sample of the automated).

    ``inclusion_probability`` is the probability with which the sidecar recorded it
    (1 for an escalated one, the decision-record sampling rate for an automated one);
    ``label`` is the class a person or an outcome said it was, None while unlabelled."""

    request_id: str
    model: str
    confidence: float  # calibrated confidence of the predicted class
    predicted_class: int
    tier: str  # AUTOMATED | HUMAN_ASSISTED | HUMAN_PRIMARY
    reason: str  # THRESHOLD | RULE | AUDIT_SAMPLE | FALLBACK_... | PAUSED
    inclusion_probability: float
    decided_at: float
    label: int | None = None
    domain: str = ""
    arm: str = ""
    policy_revision: int = 0
    group: str = ""  # the value of the configured group attribute, "" when none
    # The request's attributes, numbers as an experiment's unit key takes them (repr).
    attributes: Mapping[str, str] = field(default_factory=dict)
