"""Which changes to a policy widen automation, and so need a second person.

A change widens automation when it could let a prediction that a person would have
seen under the old policy go out unseen under the new one:

- a lower ``t_high`` or ``t_low`` anywhere (a model's default, a domain, an arm),
  compared as the thresholds that actually apply to each model, domain and arm;
- a rule removed, or its conditions changed (a changed rule may match less);
- an experiment arm whose share of traffic grows, or an experiment added, removed
  or re-keyed (traffic moves between thresholds);
- a lower audit sample rate (a higher audit-free share);
- a new model, a new calibrator or new labels (every confidence may change);
- a longer maximum policy age, or none (automation keeps running on a stale copy);
- a pause lifted (``paused`` removed from thresholds);
- a higher ``max_ece``, or none (the calibration monitor tolerates more);
- a drift guard removed, made less sensitive (a higher ``psi_alarm`` or
  ``psi_recover``, a longer window) or changed from pausing to alerting.

Anything else (higher thresholds, a pause, added rules, a higher audit rate, a
drift guard added or made more sensitive, a removed model) only tightens, and an
operator may apply it at once. The judgement is conservative: when a change cannot
be shown to tighten, it widens. Pure: no I/O."""

from __future__ import annotations

from sidecar.core.drift import DriftAction, DriftPolicy
from sidecar.core.experiments import Experiment
from sidecar.core.policy import ModelPolicy, Policy
from sidecar.core.thresholds import Thresholds


def widening(before: Policy | None, after: Policy) -> tuple[str, ...]:
    """Why after widens automation relative to before, as ``path: why`` lines
    (empty when it only tightens). No policy before: every model is new."""
    reasons: list[str] = []
    if before is not None and _longer_max_age(before, after):
        reasons.append(
            f"max_age_seconds: {_age(before.max_age_seconds)} -> {_age(after.max_age_seconds)}"
            " keeps automating on an older copy"
        )
    for name, model in after.models.items():
        old = before.models.get(name) if before is not None else None
        if old is None:
            reasons.append(f"models.{name}: a new model is automated")
        else:
            reasons.extend(_model(f"models.{name}", old, model))
    return tuple(reasons)


def _model(path: str, before: ModelPolicy, after: ModelPolicy) -> list[str]:
    reasons: list[str] = []
    if (before.calibrator.sha256, before.calibrator.version) != (
        after.calibrator.sha256,
        after.calibrator.version,
    ):
        reasons.append(
            f"{path}.calibrator: {before.calibrator.version} -> {after.calibrator.version}"
            " changes every confidence"
        )
    if before.labels != after.labels:
        reasons.append(f"{path}.labels: changed")
    reasons.extend(_thresholds(path, before, after))
    reasons.extend(_rules(path, before, after))
    reasons.extend(_experiment(path, before.experiment, after.experiment))
    reasons.extend(_drift(f"{path}.drift", before.drift, after.drift))
    if before.max_ece is not None and (after.max_ece is None or after.max_ece > before.max_ece):
        reasons.append(f"{path}.max_ece: {before.max_ece:g} -> {after.max_ece} tolerates more")
    if after.audit.rate < before.audit.rate:
        reasons.append(
            f"{path}.audit_sample_rate: {before.audit.rate:g} -> {after.audit.rate:g}"
            " audits fewer automated decisions"
        )
    return reasons


def _thresholds(path: str, before: ModelPolicy, after: ModelPolicy) -> list[str]:
    """Compare the thresholds that apply to each (arm, domain) after the change with
    those that applied to it before (an arm new to the policy: the model's)."""
    reasons: list[str] = []
    domains = sorted({*before.thresholds.domains, *after.thresholds.domains, *_arm_domains(after)})
    # An arm without thresholds of its own, before and after, is the model's row.
    own = _own_tables(before) | _own_tables(after)
    arms: list[str | None] = [None]
    if after.experiment is not None:
        arms.extend(arm.name for arm in after.experiment.arms if arm.name in own)
    for arm in arms:
        for domain in [None, *domains]:
            old, new = _applies(before, arm, domain), _applies(after, arm, domain)
            where = path
            if arm is not None:
                where += f".experiment.arms.{arm}"
            where += f".domains.{domain}" if domain is not None else ".thresholds"
            for field in ("t_high", "t_low"):
                was, now = getattr(old, field), getattr(new, field)
                if now < was:
                    reasons.append(f"{where}.{field}: lowered from {was:g} to {now:g}")
            if old.paused and not new.paused:
                reasons.append(f"{where}.paused: lifted (automation resumes)")
    return reasons


def _own_tables(model: ModelPolicy) -> set[str]:
    if model.experiment is None:
        return set()
    return {arm.name for arm in model.experiment.arms if arm.thresholds is not None}


def _arm_domains(model: ModelPolicy) -> set[str]:
    if model.experiment is None:
        return set()
    return {d for arm in model.experiment.arms if arm.thresholds for d in arm.thresholds.domains}


def _applies(model: ModelPolicy, arm_name: str | None, domain: str | None) -> Thresholds:
    table = model.thresholds
    if arm_name is not None and model.experiment is not None:
        for arm in model.experiment.arms:
            if arm.name == arm_name and arm.thresholds is not None:
                table = arm.thresholds
    return table.default if domain is None else table.for_domain(domain)


def _rules(path: str, before: ModelPolicy, after: ModelPolicy) -> list[str]:
    now = {rule.id: rule for rule in after.rules}
    reasons: list[str] = []
    for rule in before.rules:
        if rule.id not in now:
            reasons.append(f"{path}.rules.{rule.id}: removed")
        elif now[rule.id].conditions != rule.conditions:
            reasons.append(f"{path}.rules.{rule.id}: conditions changed (may match less)")
    return reasons


def _experiment(path: str, before: Experiment | None, after: Experiment | None) -> list[str]:
    where = f"{path}.experiment"
    if before is None and after is None:
        return []
    if before is None:
        return [f"{where}: added (traffic moves to its arms' thresholds)"]
    if after is None:
        return [f"{where}: removed (traffic moves to the model's thresholds)"]
    if (before.name, before.unit) != (after.name, after.unit):
        return [f"{where}: renamed or re-keyed (units move between arms)"]
    old, new = _shares(before), _shares(after)
    return [
        f"{where}.arms.{arm}.weight: share {old.get(arm, 0.0):.4g} -> {share:.4g}"
        for arm, share in new.items()
        if share > old.get(arm, 0.0)
    ]


def _drift(path: str, before: DriftPolicy | None, after: DriftPolicy | None) -> list[str]:
    if before is None:
        return []
    if after is None:
        return [f"{path}: removed (nothing pauses automation on drift)"]
    reasons = [
        f"{path}.{field}: {getattr(before, field):g} -> {getattr(after, field):g} alarms later"
        for field in ("window", "psi_alarm", "psi_recover")
        if getattr(after, field) > getattr(before, field)
    ]
    pausing = DriftAction.PAUSE_AUTOMATION
    if before.action is pausing and after.action is not pausing:
        reasons.append(f"{path}.action: {before.action.value} -> {after.action.value}")
    return reasons


def _shares(experiment: Experiment) -> dict[str, float]:
    total = sum(arm.weight for arm in experiment.arms)
    return {arm.name: arm.weight / total for arm in experiment.arms}


def _longer_max_age(before: Policy, after: Policy) -> bool:
    if after.max_age_seconds is None:
        return before.max_age_seconds is not None
    return before.max_age_seconds is not None and after.max_age_seconds > before.max_age_seconds


def _age(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds:g}s"
