"""The routing decision for many requests of one model at once: the decision
``decision.decide`` gives each of them alone (a property test compares the two
field by field), with the per-request cost cut to what must differ per request.

The policy is resolved once per batch, each rule's conditions are tested a row at a
time over the rows still unmatched (the test of a value is the one the unary path
uses), and no object is built per request: the decisions come out as columns, one
list per field of ``Decision``, in its order. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sidecar.core.decision import CalibrationFailure, Reason, label_of, paused_reason
from sidecar.core.policy import ModelPolicy
from sidecar.core.rules import RuleColumns
from sidecar.core.signals import SignalRow
from sidecar.core.thresholds import Tier

_AUTOMATED, _ASSISTED, _PRIMARY = (
    int(Tier.AUTOMATED),
    int(Tier.HUMAN_ASSISTED),
    int(Tier.HUMAN_PRIMARY),
)
_THRESHOLD, _RULE, _SAMPLE = int(Reason.THRESHOLD), int(Reason.RULE), int(Reason.AUDIT_SAMPLE)


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The requests of one model that reach a decision, as columns."""

    request_ids: Sequence[str]
    domains: Sequence[str]
    model_versions: Sequence[str]
    string_attributes: Sequence[Mapping[str, str] | None]
    numeric_attributes: Sequence[Mapping[str, float] | None]


@dataclass(frozen=True, slots=True)
class DecisionColumns:
    """N decisions: one list per field of ``Decision`` (tier and reason as ints)."""

    tier: list[int]
    reason: list[int]
    predicted_class: list[int]
    predicted_label: list[str]
    calibrated_confidence: list[float]
    margin: list[float]
    entropy: list[float]
    rule_id: list[str]
    t_high: list[float]
    t_low: list[float]
    experiment_arm: list[str]
    policy_revision: int
    calibration_version: str

    def rows(self) -> list[tuple[Any, ...]]:
        """Each decision as ``Decision.row()`` gives it."""
        n = len(self.tier)
        return list(
            zip(self.tier, self.reason, self.predicted_class, self.predicted_label,
                self.calibrated_confidence, self.margin, self.entropy, self.rule_id, self.t_high,
                self.t_low, self.experiment_arm, [self.policy_revision] * n,
                [self.calibration_version] * n, strict=True)
        )  # fmt: skip


def decide_rows(
    model: ModelPolicy,
    revision: int,
    stale: bool,
    rows: BatchRows,
    signals: Sequence[SignalRow | None] | CalibrationFailure,
    drifted: bool = False,
) -> DecisionColumns:
    """The decision for each row: ``decide`` for a policy whose model is model, given
    whether the policy is stale and the model's drift guard pauses automation, with
    each row's signals (None: non-finite) or why the whole batch has none."""
    n = len(rows.request_ids)
    out = _fallbacks(n, revision, model.calibrator.version)
    if isinstance(signals, CalibrationFailure):
        out.reason[:] = [int(signals.value)] * n
        return out
    live = [i for i, s in enumerate(signals) if s is not None]
    for i, s in enumerate(signals):
        if s is None:
            out.reason[i] = int(Reason.FALLBACK_NON_FINITE)
    labels = model.labels or ()
    for i in live:
        cls, confidence, margin, entropy = cast(SignalRow, signals[i])
        out.predicted_class[i] = cls
        out.predicted_label[i] = label_of(labels, cls)
        out.calibrated_confidence[i], out.margin[i], out.entropy[i] = confidence, margin, entropy
    if stale:
        for i in live:
            out.reason[i] = int(Reason.FALLBACK_STALE_POLICY)
        return out
    _apply_rules(model, rows, signals, live, out)
    _apply_thresholds(model, rows, live, out, drifted)
    return out


def _fallbacks(n: int, revision: int, version: str) -> DecisionColumns:
    """N no-signal fallbacks (HUMAN_ASSISTED, reason to be set), the columns to fill."""
    return DecisionColumns(
        [_ASSISTED] * n, [0] * n, [-1] * n, [""] * n, [0.0] * n, [0.0] * n, [0.0] * n,
        [""] * n, [0.0] * n, [0.0] * n, [""] * n, revision, version,
    )  # fmt: skip


def _apply_rules(
    model: ModelPolicy,
    rows: BatchRows,
    signals: Sequence[SignalRow | None],
    live: list[int],
    out: DecisionColumns,
) -> None:
    """The first matching rule of each live row: HUMAN_PRIMARY by RULE."""
    if not model.compiled_rules:
        return
    columns = RuleColumns(
        rows.domains,
        rows.model_versions,
        rows.string_attributes,
        rows.numeric_attributes,
        cast(Sequence[SignalRow], signals),  # only live rows are read
    )
    unmatched = live
    for rule in model.compiled_rules:
        matched = rule.matching_rows(columns, unmatched)
        if not matched:
            continue
        for i in matched:
            out.tier[i], out.reason[i], out.rule_id[i] = _PRIMARY, _RULE, rule.id
        taken = set(matched)
        unmatched = [i for i in unmatched if i not in taken]


def _apply_thresholds(
    model: ModelPolicy, rows: BatchRows, live: list[int], out: DecisionColumns, drifted: bool
) -> None:
    """Each live row's arm and thresholds (recorded for rule rows too), and the tier
    they give the rows no rule took; a pause, or the audit sample, of the AUTOMATED
    ones."""
    experiment, table = model.experiment, model.thresholds
    ids, domains = rows.request_ids, rows.domains
    for i in live:
        if experiment is not None:
            arm = experiment.arm_for(
                experiment.unit_key(ids[i], rows.string_attributes[i], rows.numeric_attributes[i])
            )
            out.experiment_arm[i] = arm.name
            thresholds = (arm.thresholds or table).for_domain(domains[i])
        else:
            thresholds = table.for_domain(domains[i])
        out.t_high[i], out.t_low[i] = thresholds.t_high, thresholds.t_low
        if out.reason[i] == _RULE:
            continue
        tier = int(thresholds.tier(out.calibrated_confidence[i]))
        out.tier[i], out.reason[i] = tier, _THRESHOLD
        if tier != _AUTOMATED:
            continue
        held = paused_reason(thresholds, drifted)
        if held is not None:
            out.tier[i], out.reason[i] = _ASSISTED, int(held)
        elif model.audit.should_sample(ids[i]):
            out.reason[i] = _SAMPLE
