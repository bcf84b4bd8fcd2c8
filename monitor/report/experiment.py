"""The experiment report: each arm's automation rate, Tier-1 error rate with its
counts and review volume, and its always-valid p-value against the control, look
by look; the last look is ``hitl monitor check`` over the period."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.checks import MODEL, Findings, Scope
from monitor.estimates import AUTOMATED, by
from monitor.observations import Observation
from monitor.report.charts import _p_value_chart
from monitor.report.measures import _control_counts, looks, review_volume
from monitor.report.page import (
    NONE,
    _facts,
    _figure,
    _interval,
    _number,
    _page,
    _percent,
    _section,
    _table,
)
from monitor.report.subject import Subject
from monitor.sequential import TEST, Comparison


def experiment(subject: Subject) -> str:
    policy = subject.policy
    if policy.experiment is None:
        raise ValueError(f"model {subject.model!r} has no experiment")
    history = looks(subject)
    last = history[-1].findings
    arms = [arm.name for arm in policy.experiment.arms]
    by_arm = by(subject.observations, "arm")
    sections = [
        _section(
            "Summary",
            _facts(
                [
                    ("Experiment", f"{policy.experiment.name} (unit: {policy.experiment.unit})"),
                    ("Control", arms[0]),
                    ("Test", f"{TEST}, alpha {subject.limits.alpha:g}"),
                    ("Verdicts", _verdicts(last.experiments)),
                ]
            ),
        ),
        _section("Arms", _arm_table(subject, arms, by_arm, last)),
        _section(
            "The always-valid p-value over time",
            _figure(
                _p_value_chart(subject, arms[1:], history),
                "At each bucket's end, every decision since the period began: each arm's "
                "Tier-1 error rate (effective counts), and its p-value against the control, "
                "valid however often it is looked at. At or below alpha (dashed) the arm "
                "differs: harmful when its error rate is the higher.",
            ),
        ),
    ]
    whole = last.health[MODEL]
    return _page(subject, "experiment", whole, sections)


def _verdict(c: Comparison) -> str:
    if c.harmful:
        return "harmful"
    return "better" if c.better else "none"


def _verdicts(experiments: Mapping[str, Comparison]) -> str:
    return "; ".join(f"{arm}: {_verdict(c)}" for arm, c in experiments.items()) or NONE


def _arm_table(
    subject: Subject,
    arms: Sequence[str],
    by_arm: Mapping[str, Sequence[Observation]],
    last: Findings,
) -> str:
    assert subject.policy.experiment is not None
    weights = {arm.name: arm.weight for arm in subject.policy.experiment.arms}
    rows = []
    for arm in arms:
        members = by_arm.get(arm, [])
        h = last.health.get(Scope("arm", arm))
        comparison = last.experiments.get(arm)
        counts = comparison.arm if comparison else _control_counts(last)
        rows.append(
            [
                arm + (" (control)" if arm == arms[0] else ""),
                f"{weights[arm]:g}",
                str(len(members)),
                NONE if h is None else _percent(h.tier_shares.get(AUTOMATED)),
                NONE if counts is None or not counts.trials else _number(counts.error_rate),
                NONE if counts is None else f"{counts.errors:,.1f} of {counts.trials:,.1f}",
                f"{review_volume(members):,.0f}",
                str(0 if h is None else h.labelled),
                NONE if comparison is None else f"{comparison.p_value:.4g}",
                NONE if comparison is None else _interval((comparison.ci_low, comparison.ci_high)),
                NONE if comparison is None else _verdict(comparison),
            ]
        )
    headers = ["arm", "weight", "recorded", "automation rate", "Tier-1 error rate"]
    headers += ["Tier-1 errors (effective)", "review volume", "labelled", "p-value"]
    headers += ["difference (always-valid CI)", "verdict"]
    return _table(headers, rows)
