"""What the monitor concludes from one model's recorded decisions: the health of each
scope (the model, each domain its policy names, each experiment arm, each group) and
the breaches among them, each with the tightening it calls for and its evidence.
Pure: observations and the compiled policy in, findings out.

A breach, and what it calls for:

- **Tier-1 accuracy** whose upper confidence bound lies below the model's
  ``target_tier1_accuracy`` (the model or a domain): pause automation there.
- **ECE** above the model's ``max_ece``, once ``min_labels`` decisions are labelled:
  pause automation for the model.
- **PSI** of confidence or predicted class at or above the model's
  ``drift.psi_alarm``, once ``min_recorded`` decisions and the drift guard's window
  are recorded (a smaller sample's PSI is mostly noise): pause automation
  for the model when its drift action is ``pause_automation``, else only alert. A
  shift without labels never recalibrates anything: it may need new training data.
- **A sidecar's drift guard** that paused automation (decisions recorded with reason
  FALLBACK_DRIFT) while the model's drift action is ``pause_automation``: pause
  automation for the model in the policy, so that every sidecar pauses (not only
  those whose window has seen the shift) and the pause lasts until an approver lifts
  it (the guard alone resumes once its window recovers).
- **An experiment arm** whose Tier-1 error rate the always-valid test finds worse than
  the control's: halt the arm (its thresholds raised to at least the control's).
- **A group** (the configured attribute) whose Tier-1 upper bound lies below target:
  alert only, since a policy has no per-group thresholds to tighten.
- **A contaminated experiment**: decisions whose request lacks the unit key (given
  the control without being randomised) or units seen in more than one arm: alert,
  and those decisions are left out of the arms' comparison.

Nothing here widens: every action only tightens the policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from monitor.estimates import Health, by, class_psi, class_shift, confidence_psi, health
from monitor.observations import Observation
from monitor.sequential import ArmCounts, Comparison, compare
from sidecar.core.drift import DriftAction
from sidecar.core.experiments import ATTRIBUTE_PREFIX
from sidecar.core.policy import ModelPolicy

ESTIMATOR = "post-stratified inverse-probability weights (Hajek within tier and reason)"


KINDS = (
    "tier1_accuracy",
    "ece",
    "psi",
    "drift_guard",
    "arm_harmful",
    "group_tier1_accuracy",
    "experiment_contaminated",
)


class Act(Enum):
    PAUSE = "pause"  # pause automation for the scope
    HALT_ARM = "halt_arm"  # an arm's thresholds raised to the control's
    ALERT = "alert"  # nothing to tighten: metrics and logs only


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a finding holds: the model (kind "model"), or one of its domains, arms or
    groups."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "model" else f"{self.kind}:{self.name}"


MODEL = Scope("model")


@dataclass(frozen=True)
class Breach:
    kind: str  # one of KINDS
    scope: Scope
    act: Act
    summary: str  # one line, for the change's reason and the log
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """The calibrator artefact's histograms the PSI is taken against."""

    edges: Sequence[float]
    counts: Sequence[float]
    classes: Sequence[float] = ()


@dataclass(frozen=True)
class Limits:
    """The monitor's settings that are not in the policy."""

    min_labels: int = 200  # labelled decisions before ECE is judged
    min_recorded: int = 500  # recorded decisions before PSI is judged
    level: float = 0.95  # of the Tier-1 interval
    alpha: float = 0.05  # of the experiments' always-valid test


@dataclass(frozen=True)
class Findings:
    """One check of one model."""

    model: str
    health: dict[Scope, Health]
    psi: dict[str, float]  # "confidence", "class"
    experiments: dict[str, Comparison]  # by arm name
    breaches: list[Breach]
    class_shift: float | None = None  # the predicted classes' total variation from the reference

    def as_json(self) -> dict[str, Any]:
        """The findings as plain data (``hitl monitor check``, the reports)."""
        return {
            "health": {str(scope): health_json(h) for scope, h in self.health.items()},
            "psi": self.psi,
            "class_shift": self.class_shift,
            "experiments": {arm: c.as_evidence() for arm, c in self.experiments.items()},
            "breaches": [
                {"kind": b.kind, "scope": str(b.scope), "act": b.act.value, "summary": b.summary}
                for b in self.breaches
            ],
        }


def health_json(h: Health) -> dict[str, Any]:
    return {
        "decisions": h.decisions,
        "recorded": h.recorded,
        "labelled": h.labelled,
        "tier_shares": h.tier_shares,
        "accuracy": h.accuracy,
        "tier1_accuracy": h.tier1_accuracy,
        "tier1_interval": None if h.tier1_interval is None else list(h.tier1_interval),
        "tier1_effective_rows": h.tier1_effective,
        "override_rates": h.override_rates,
        "ece": h.ece,
        "unseen_share": h.unseen_share,
    }


def check_model(
    policy: ModelPolicy,
    observations: Sequence[Observation],
    reference: Reference | None,
    limits: Limits,
    window: tuple[float, float],
    experiment: Sequence[Observation] | None = None,
) -> Findings:
    """Every scope's health, the PSI, the experiment's arms, and the breaches.
    ``experiment``: the decisions the arms are compared on (all since the experiment
    took its present form, so that the sequential test sees its counts grow; default:
    observations)."""
    scopes: dict[Scope, list[Observation]] = {MODEL: list(observations)}
    for domain, members in by(observations, "domain").items():
        if domain in policy.thresholds.domains:
            scopes[Scope("domain", domain)] = members
    compared = observations if experiment is None else experiment
    randomised, contamination = _randomised(policy, compared)
    for arm, members in by(randomised, "arm").items():
        if arm:
            scopes[Scope("arm", arm)] = members
    for group, members in by(observations, "group").items():
        if group:
            scopes[Scope("group", group)] = members
    healths = {scope: health(members, level=limits.level) for scope, members in scopes.items()}
    psi = {}
    shift = None
    if reference is not None and observations:
        psi["confidence"] = confidence_psi(observations, reference.edges, reference.counts)
        if reference.classes:
            psi["class"] = class_psi(observations, reference.classes)
            shift = class_shift(observations, reference.classes)
    experiments = _experiments(policy, healths, limits)
    base = {"window": list(window), "estimator": ESTIMATOR, "recorded": len(observations)}
    breaches = [
        *_accuracy(policy, healths, base),
        *_ece(policy, healths[MODEL], limits, base),
        *_psi(policy, psi, len(observations), limits, base),
        *_guard(policy, observations, psi, base),
        *_arms(experiments, base),
        *_contaminated(policy, contamination, base),
    ]
    return Findings(policy.name, healths, psi, experiments, breaches, shift)


def _accuracy(
    policy: ModelPolicy, healths: dict[Scope, Health], base: dict[str, Any]
) -> list[Breach]:
    target = policy.target_tier1_accuracy
    if target is None:
        return []
    found = []
    for scope, h in healths.items():
        if scope.kind == "arm" or h.tier1_interval is None or h.tier1_accuracy is None:
            continue
        low, high = h.tier1_interval
        if high >= target:
            continue
        group = scope.kind == "group"
        found.append(
            Breach(
                "group_tier1_accuracy" if group else "tier1_accuracy",
                scope,
                Act.ALERT if group else Act.PAUSE,
                f"{policy.name} {scope}: Tier-1 accuracy {h.tier1_accuracy:.4f}, upper bound "
                f"{high:.4f} below the target {target:g}",
                {
                    **base,
                    "tier1_accuracy": h.tier1_accuracy,
                    "interval": [low, high],
                    "effective_rows": h.tier1_effective,
                    "labelled": h.labelled,
                    "target": target,
                },
            )
        )
    return found


def _ece(policy: ModelPolicy, h: Health, limits: Limits, base: dict[str, Any]) -> list[Breach]:
    limit = policy.max_ece
    if limit is None or h.ece is None or h.labelled < limits.min_labels or h.ece <= limit:
        return []
    return [
        Breach(
            "ece",
            MODEL,
            Act.PAUSE,
            f"{policy.name}: weighted ECE {h.ece:.4f} above max_ece {limit:g} over "
            f"{h.labelled} labelled decisions",
            {**base, "ece": h.ece, "max_ece": limit, "labelled": h.labelled},
        )
    ]


def _psi(
    policy: ModelPolicy, psi: dict[str, float], recorded: int, limits: Limits, base: dict[str, Any]
) -> list[Breach]:
    drift = policy.drift
    if drift is None or not psi or recorded < max(limits.min_recorded, drift.window):
        return []
    worst = max(psi, key=lambda of: psi[of])
    if psi[worst] < drift.psi_alarm:
        return []
    act = Act.PAUSE if drift.action is DriftAction.PAUSE_AUTOMATION else Act.ALERT
    return [
        Breach(
            "psi",
            MODEL,
            act,
            f"{policy.name}: PSI of {worst} {psi[worst]:.3f} at or above psi_alarm "
            f"{drift.psi_alarm:g} over {recorded} recorded decisions",
            {**base, "psi": psi, "psi_alarm": drift.psi_alarm},
        )
    ]


def _guard(
    policy: ModelPolicy,
    observations: Sequence[Observation],
    psi: dict[str, float],
    base: dict[str, Any],
) -> list[Breach]:
    drift = policy.drift
    if drift is None or drift.action is not DriftAction.PAUSE_AUTOMATION:
        return []
    paused = [o for o in observations if o.reason == "FALLBACK_DRIFT"]
    if not paused:
        return []
    return [
        Breach(
            "drift_guard",
            MODEL,
            Act.PAUSE,
            f"{policy.name}: a sidecar's drift guard paused automation ({len(paused)} "
            "decisions sent to a person by FALLBACK_DRIFT)",
            {
                **base,
                "fallback_drift_decisions": len(paused),
                "first_at": min(o.decided_at for o in paused),
                "last_at": max(o.decided_at for o in paused),
                "psi": psi,
                "psi_alarm": drift.psi_alarm,
            },
        )
    ]


def _randomised(
    policy: ModelPolicy, observations: Sequence[Observation]
) -> tuple[list[Observation], dict[str, int]]:
    """The experiment's decisions that its arms may be compared on, and how many were
    left out: those whose request lacks the unit key (the sidecar gives them the
    control, unrandomised) and those of a unit seen in more than one arm (the
    experiment was re-keyed or re-weighted within the window)."""
    experiment = policy.experiment
    if experiment is None:
        return list(observations), {}
    name = experiment.unit.removeprefix(ATTRIBUTE_PREFIX)

    def key(o: Observation) -> str | None:
        return o.request_id if experiment.unit == "request_id" else o.attributes.get(name)

    arms: dict[str, set[str]] = defaultdict(set)
    for o in observations:
        unit = key(o)
        if unit is not None:
            arms[unit].add(o.arm)
    kept, missing, crossed = [], 0, 0
    for o in observations:
        unit = key(o)
        if unit is None:
            missing += 1
        elif len(arms[unit]) > 1:
            crossed += 1
        else:
            kept.append(o)
    if not missing and not crossed:
        return kept, {}
    overlapping = sum(1 for seen in arms.values() if len(seen) > 1)
    return kept, {
        "unit_key_missing": missing,
        "units_in_two_arms": overlapping,
        "decisions_in_two_arms": crossed,
    }


def _contaminated(
    policy: ModelPolicy, contamination: dict[str, int], base: dict[str, Any]
) -> list[Breach]:
    if not contamination or policy.experiment is None:
        return []
    name = policy.experiment.name
    return [
        Breach(
            "experiment_contaminated",
            Scope("experiment", name),
            Act.ALERT,
            f"experiment {name}: {contamination['unit_key_missing']} decisions without the "
            f"unit key {policy.experiment.unit}, {contamination['units_in_two_arms']} units "
            "in two arms; left out of the comparison",
            {**base, **contamination},
        )
    ]


def _experiments(
    policy: ModelPolicy, healths: dict[Scope, Health], limits: Limits
) -> dict[str, Comparison]:
    if policy.experiment is None:
        return {}
    control, *others = (arm.name for arm in policy.experiment.arms)
    control_counts = _counts(control, healths.get(Scope("arm", control)))
    return {
        arm: compare(
            control_counts, _counts(arm, healths.get(Scope("arm", arm))), alpha=limits.alpha
        )
        for arm in others
    }


def _counts(arm: str, h: Health | None) -> ArmCounts:
    """An arm's checked Tier-1 decisions and errors, as effective counts."""
    if h is None or h.tier1_accuracy is None:
        return ArmCounts(arm, 0.0, 0.0)
    trials = h.tier1_effective
    return ArmCounts(arm, trials, (1.0 - h.tier1_accuracy) * trials)


def _arms(experiments: dict[str, Comparison], base: dict[str, Any]) -> list[Breach]:
    return [
        Breach(
            "arm_harmful",
            Scope("arm", arm),
            Act.HALT_ARM,
            f"arm {arm}: Tier-1 error {c.arm_error_rate:.4f} against the control's "
            f"{c.control_error_rate:.4f}, always-valid p {c.p_value:.4g}",
            {**base, "comparison": c.as_evidence()},
        )
        for arm, c in experiments.items()
        if c.harmful
    ]
