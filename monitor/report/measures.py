"""The figures the reports need beyond ``monitor.estimates``: each reason's share
of the decisions, the review volume, and the experiment as the monitor would have
judged it look by look. Weighted as the monitor weighs (1 / inclusion probability)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.checks import Findings, check_model
from monitor.estimates import AUTOMATED
from monitor.observations import Observation
from monitor.report.subject import Subject
from monitor.sequential import ArmCounts
from sidecar.core.decision import Reason

REASONS = tuple(reason.name for reason in Reason)


def reason_shares(observations: Sequence[Observation]) -> dict[str, float]:
    """Each reason's estimated share of the decisions, every recorded decision
    standing for 1 / inclusion_probability of them (as the tiers' shares do)."""
    totals = dict.fromkeys(REASONS, 0.0)
    for o in observations:
        name = o.reason or "UNSPECIFIED"
        totals[name] = totals.get(name, 0.0) + 1.0 / o.inclusion_probability
    total = sum(totals.values())
    return {name: value / total if total else 0.0 for name, value in totals.items()}


def review_volume(observations: Sequence[Observation]) -> float:
    """Decisions sent to a person: every one not AUTOMATED, and the audit sample."""
    return sum(
        1.0 / o.inclusion_probability
        for o in observations
        if o.tier != AUTOMATED or o.reason == Reason.AUDIT_SAMPLE.name
    )


@dataclass(frozen=True)
class Look:
    """The experiment as the monitor would have judged it at ``at``, over every
    decision of the period until then."""

    at: float
    findings: Findings


def looks(subject: Subject) -> list[Look]:
    """One look at each bucket's end, over the decisions since the period began."""
    period = subject.period
    seen: list[Observation] = []
    found = []
    for end, part in zip(period.edges()[1:], period.split(subject.observations), strict=True):
        seen.extend(part)
        window = (period.since, float(end))
        findings = check_model(subject.policy, seen, None, subject.limits, window)
        found.append(Look(float(end), findings))
    return found


def _control_counts(last: Findings) -> ArmCounts | None:
    """The control's counts, as every comparison holds them (None without one)."""
    first = next(iter(last.experiments.values()), None)
    return None if first is None else first.control
