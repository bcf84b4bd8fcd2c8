"""The routing decision: a pure function of a request, its calibrated signals, the
policy and the time.

Order: fallbacks first (never AUTOMATED when anything failed), then the rules
overlay (first match: HUMAN_PRIMARY), then the experiment arm's thresholds for the
request's domain; what they would automate goes to a person when the thresholds are
paused (PAUSED) or the model's drift guard pauses it (FALLBACK_DRIFT); then the audit
sample of AUTOMATED decisions."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum, IntEnum
from typing import Any

from sidecar.core.policy import ModelPolicy, Policy
from sidecar.core.request import RouteInput
from sidecar.core.rules import first_match
from sidecar.core.signals import Signals
from sidecar.core.thresholds import Thresholds, Tier
from sidecar.core.values import value


class Reason(IntEnum):
    """Mirrors hitl.v1.Reason (values equal the proto numbers)."""

    THRESHOLD = 1
    RULE = 2
    AUDIT_SAMPLE = 3
    FALLBACK_NO_POLICY = 4
    FALLBACK_STALE_POLICY = 5
    FALLBACK_CALIBRATOR = 6
    FALLBACK_NON_FINITE = 7
    FALLBACK_DRIFT = 8
    PAUSED = 9


TIER_NAMES = {int(tier): tier.name for tier in Tier}
REASON_NAMES = {int(reason): reason.name for reason in Reason}
_FIRST_FALLBACK, _LAST_FALLBACK = int(Reason.FALLBACK_NO_POLICY), int(Reason.FALLBACK_DRIFT)
_AUTOMATED, _AUDIT_SAMPLE = int(Tier.AUTOMATED), int(Reason.AUDIT_SAMPLE)


def is_degraded(reason: int) -> bool:
    """Whether a decision of this reason used a fallback (FALLBACK_* reasons)."""
    return _FIRST_FALLBACK <= reason <= _LAST_FALLBACK


def label_of(labels: Sequence[str], cls: int) -> str:
    """A class's label, or its number where the policy names no label for it."""
    return labels[cls] if cls < len(labels) else str(cls)


def escalates(tier: int, reason: int) -> bool:
    """Whether a person must see a decision: tiers 2 and 3, and audit samples."""
    return tier != _AUTOMATED or reason == _AUDIT_SAMPLE


class CalibrationFailure(Enum):
    """Why there are no signals for a prediction."""

    RAISED = Reason.FALLBACK_CALIBRATOR
    NON_FINITE = Reason.FALLBACK_NON_FINITE


@value
class Decision:
    """Who acts on a prediction and why; everything the audit record needs."""

    tier: Tier
    reason: Reason
    predicted_class: int = -1
    predicted_label: str = ""
    calibrated_confidence: float = 0.0
    margin: float = 0.0
    entropy: float = 0.0
    rule_id: str = ""
    t_high: float = 0.0
    t_low: float = 0.0
    experiment_arm: str = ""
    policy_revision: int = 0
    calibration_version: str = ""

    def row(self) -> tuple[Any, ...]:
        """The fields as plain values, in order, for long-lived storage that the
        garbage collector should not walk (the replay window); see ``from_row``."""
        return (
            int(self.tier),
            int(self.reason),
            self.predicted_class,
            self.predicted_label,
            self.calibrated_confidence,
            self.margin,
            self.entropy,
            self.rule_id,
            self.t_high,
            self.t_low,
            self.experiment_arm,
            self.policy_revision,
            self.calibration_version,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Decision:
        tier, reason, *rest = row
        return cls(Tier(tier), Reason(reason), *rest)

    @property
    def degraded(self) -> bool:
        return is_degraded(self.reason)

    @property
    def escalate(self) -> bool:
        """A person must see it: tiers 2 and 3, and audit samples."""
        return escalates(self.tier, self.reason)


def decide(
    request: RouteInput,
    policy: Policy | None,
    signals: Signals | CalibrationFailure,
    now: float,
    drifted: bool = False,
) -> Decision:
    """The decision for one request. ``signals`` is the calibrated output, or why
    there is none; with no policy it is ignored. ``drifted``: the model's drift guard
    pauses automation."""
    if policy is None:
        return Decision(Tier.HUMAN_ASSISTED, Reason.FALLBACK_NO_POLICY)
    model = policy.models[request.model]
    base = _Context(policy.revision, model)
    if isinstance(signals, CalibrationFailure):
        return base.fallback(Reason(signals.value), None)
    if policy.is_stale(now):
        return base.fallback(Reason.FALLBACK_STALE_POLICY, signals)
    rule = first_match(model.compiled_rules, request, signals)
    arm_name, thresholds = _thresholds(model, request)
    if rule is not None:
        return base.make(Tier.HUMAN_PRIMARY, Reason.RULE, signals, thresholds, arm_name, rule.id)
    tier = thresholds.tier(signals.confidence)
    reason = Reason.THRESHOLD
    if tier is Tier.AUTOMATED:
        held = paused_reason(thresholds, drifted)
        if held is not None:
            return base.make(Tier.HUMAN_ASSISTED, held, signals, thresholds, arm_name)
        if model.audit.should_sample(request.request_id):
            reason = Reason.AUDIT_SAMPLE
    return base.make(tier, reason, signals, thresholds, arm_name)


def paused_reason(thresholds: Thresholds, drifted: bool) -> Reason | None:
    """Why a decision the thresholds automate goes to a person instead, if it does:
    the policy pauses them, or the model's drift guard pauses it."""
    if thresholds.paused:
        return Reason.PAUSED
    return Reason.FALLBACK_DRIFT if drifted else None


def _thresholds(model: ModelPolicy, request: RouteInput) -> tuple[str, Thresholds]:
    table = model.thresholds
    arm_name = ""
    if model.experiment is not None:
        arm = model.experiment.choose(request)
        arm_name = arm.name
        if arm.thresholds is not None:
            table = arm.thresholds
    return arm_name, table.for_domain(request.domain)


@value
class _Context:
    revision: int
    model: ModelPolicy

    def make(
        self,
        tier: Tier,
        reason: Reason,
        signals: Signals,
        thresholds: Thresholds,
        arm: str,
        rule_id: str = "",
    ) -> Decision:
        labels = self.model.labels or ()
        cls = signals.predicted_class
        return Decision(
            tier=tier,
            reason=reason,
            predicted_class=cls,
            predicted_label=label_of(labels, cls),
            calibrated_confidence=signals.confidence,
            margin=signals.margin,
            entropy=signals.entropy,
            rule_id=rule_id,
            t_high=thresholds.t_high,
            t_low=thresholds.t_low,
            experiment_arm=arm,
            policy_revision=self.revision,
            calibration_version=self.model.calibrator.version,
        )

    def fallback(self, reason: Reason, signals: Signals | None) -> Decision:
        """HUMAN_ASSISTED, degraded; the prediction is kept for the reviewer if any."""
        if signals is None:
            return Decision(
                Tier.HUMAN_ASSISTED,
                reason,
                policy_revision=self.revision,
                calibration_version=self.model.calibrator.version,
            )
        return self.make(Tier.HUMAN_ASSISTED, reason, signals, Thresholds(0.0, 0.0), "")
