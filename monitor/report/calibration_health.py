"""The calibration-health report: the weighted reliability diagram; ECE and Tier-1
accuracy with its interval against the policy's ``max_ece`` and
``target_tier1_accuracy``; PSI per bucket against the calibrator artefact's
reference; each domain and group. Every figure is the monitor's own:
``monitor.checks`` over the period, ``monitor.estimates`` per bucket and scope."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from calibrators.metrics import Bins
from monitor.checks import MODEL, Findings, Reference, check_model
from monitor.estimates import AUTOMATED, Health, by, class_psi, confidence_psi, health
from monitor.observations import Observation
from monitor.report.charts import _accuracy_chart, _psi_chart, _reliability_chart
from monitor.report.page import (
    NONE,
    _e,
    _facts,
    _figure,
    _interval,
    _limit,
    _number,
    _page,
    _percent,
    _section,
    _table,
    _when,
)
from monitor.report.subject import Period, Subject

PSI_OF = {"class": "predicted class"}  # monitor.checks.Findings.psi's keys, for people


def calibration_health(subject: Subject) -> str:
    observations = subject.observations
    findings = check_model(
        subject.policy,
        observations,
        subject.reference,
        subject.limits,
        (subject.period.since, subject.period.until),
    )
    whole = findings.health[MODEL]
    parts = subject.period.split(observations)
    healths = [health(part, level=subject.limits.level) if part else None for part in parts]
    psi = _psi_series(subject.reference, parts)
    sections = [
        _section("Summary", _calibration_summary(subject, whole, findings)),
        _section(
            "Reliability (weighted)",
            _reliability_figure(whole.reliability),
        ),
        _section("Tier-1 accuracy and ECE over time", _over_time_figure(subject, healths)),
        _section(
            "Drift: PSI against the calibrator's reference", _psi_section(subject, parts, psi)
        ),
        _section("Per bucket", _bucket_table(subject.period, parts, healths, psi)),
        _section("Per domain", _scope_table(subject, by(observations, "domain"), "domain")),
        _section("Per group", _group_section(subject)),
    ]
    return _page(subject, "calibration-health", whole, sections)


def _calibration_summary(subject: Subject, whole: Health, findings: Findings) -> str:
    policy, limits = subject.policy, subject.limits
    rows = [
        ("Tier-1 accuracy", _number(whole.tier1_accuracy)),
        (f"Interval ({limits.level:.0%}, Clopper-Pearson)", _interval(whole.tier1_interval)),
        ("Effective labelled Tier-1 decisions", f"{whole.tier1_effective:,.1f}"),
        ("target_tier1_accuracy", _limit(policy.target_tier1_accuracy)),
        ("Against the target", _against_target(whole, policy.target_tier1_accuracy)),
        ("Weighted ECE", _number(whole.ece)),
        ("max_ece", _limit(policy.max_ece)),
        ("Against max_ece", _against_max_ece(whole, policy.max_ece, limits.min_labels)),
        ("Accuracy (all tiers with labels)", _number(whole.accuracy)),
    ]
    for of, value in sorted(findings.psi.items()):
        rows.append((f"PSI of {PSI_OF.get(of, of)} (the whole period)", f"{value:.4f}"))
    if whole.unseen:
        unseen = ", ".join(f"{s.tier}/{s.reason}" for s in whole.unseen)
        rows.append(("Strata without labels (left out)", f"{unseen}: {whole.unseen_share:.1%}"))
    breaches = "".join(f"<li>{_e(b.summary)}</li>" for b in findings.breaches)
    said = (
        f"<p>What the monitor finds over the whole period:</p><ul>{breaches}</ul>"
        if breaches
        else "<p>The monitor finds no breach over the whole period.</p>"
    )
    return _facts(rows) + said


def _against_target(h: Health, target: float | None) -> str:
    if target is None:
        return "no target set"
    if h.tier1_interval is None:
        return "not judged: no labelled AUTOMATED decision"
    low, high = h.tier1_interval
    if high < target:
        return "BELOW TARGET: the interval's upper bound is below it"
    if low >= target:
        return "meets it: the interval's lower bound is at or above it"
    return "consistent with it: the interval contains it"


def _against_max_ece(h: Health, limit: float | None, min_labels: int) -> str:
    if limit is None:
        return "no limit set"
    if h.ece is None or h.labelled < min_labels:
        return f"not judged: {h.labelled} labelled decisions, fewer than {min_labels}"
    return "ABOVE max_ece" if h.ece > limit else "within it"


def _reliability_figure(bins: Bins | None) -> str:
    if bins is None:
        return "<p>No labelled decision: nothing to draw.</p>"
    return _figure(
        _reliability_chart(bins),
        "Top: per confidence bin, the weighted share of labelled decisions whose label is "
        "the predicted class (bars) and their weighted mean confidence (diamonds), the gap "
        "between them in red; on the diagonal, confidence is accuracy. Bottom: each bin's "
        "share of the weight.",
    )


def _over_time_figure(subject: Subject, healths: Sequence[Health | None]) -> str:
    return _figure(
        _accuracy_chart(subject, healths),
        "Each bucket's Tier-1 accuracy with its interval, and its weighted ECE; the dashed "
        "lines are the policy's target_tier1_accuracy and max_ece.",
    )


def _psi_series(
    reference: Reference | None, parts: Sequence[Sequence[Observation]]
) -> dict[str, list[float]]:
    """Each bucket's PSI of confidence and of the predicted class (NaN when empty)."""
    if reference is None:
        return {}
    series = {"confidence": [_psi(part, reference, "confidence") for part in parts]}
    if reference.classes:
        series["predicted class"] = [_psi(part, reference, "class") for part in parts]
    return series


def _psi_section(
    subject: Subject, parts: Sequence[Sequence[Observation]], series: Mapping[str, list[float]]
) -> str:
    if not series:
        return "<p>The calibrator artefact carries no reference histogram.</p>"
    alarm = None if subject.policy.drift is None else subject.policy.drift.psi_alarm
    thin = [len(part) < subject.limits.min_recorded for part in parts]
    return _figure(
        _psi_chart(subject.period, series, alarm, thin),
        f"PSI of each bucket's decisions against the calibrator artefact's reference "
        f"(each recorded decision counted 1 / inclusion probability times); hollow where a "
        f"bucket holds fewer than {subject.limits.min_recorded} recorded decisions, the "
        f"monitor's minimum. The dashed line is the policy's drift.psi_alarm.",
    )


def _psi(part: Sequence[Observation], reference: Reference, of: str) -> float:
    if not part:
        return math.nan
    if of == "class":
        return class_psi(part, reference.classes)
    return confidence_psi(part, reference.edges, reference.counts)


def _bucket_table(
    period: Period,
    parts: Sequence[Sequence[Observation]],
    healths: Sequence[Health | None],
    psi: Mapping[str, list[float]],
) -> str:
    rows = []
    confidence = psi.get("confidence", [math.nan] * period.buckets)
    starts = period.edges()[:-1]
    for start, part, h, drift in zip(starts, parts, healths, confidence, strict=True):
        rows.append(
            [
                _when(float(start)),
                str(len(part)),
                str(0 if h is None else h.labelled),
                NONE if h is None else _number(h.tier1_accuracy),
                NONE if h is None else _interval(h.tier1_interval),
                NONE if h is None else _number(h.ece),
                _number(drift),
            ]
        )
    headers = ["from", "recorded", "labelled", "Tier-1 accuracy", "interval", "ECE"]
    headers += ["PSI of confidence"]
    return _table(headers, rows)


def _scope_table(subject: Subject, groups: Mapping[str, Sequence[Observation]], kind: str) -> str:
    target = subject.policy.target_tier1_accuracy
    rows = []
    for name, members in groups.items():
        h = health(members, level=subject.limits.level)
        rows.append(
            [
                name or f"(no {kind})",
                str(h.recorded),
                str(h.labelled),
                f"{h.decisions:,.0f}",
                _percent(h.tier_shares.get(AUTOMATED)),
                _number(h.tier1_accuracy),
                _interval(h.tier1_interval),
                _number(h.ece),
                _against_target(h, target),
            ]
        )
    headers = [kind, "recorded", "labelled", "decisions (est.)", "automated"]
    headers += ["Tier-1 accuracy", "interval", "ECE", "against the target"]
    return _table(headers, rows)


def _group_section(subject: Subject) -> str:
    if not subject.group_attribute:
        return (
            "<p>No group attribute is set (<code>--group-attribute</code>, "
            "<code>HITL_MONITOR_GROUP_ATTRIBUTE</code>).</p>"
        )
    note = f"<p>Groups: the values of the string attribute <code>{_e(subject.group_attribute)}"
    note += "</code>.</p>"
    return note + _scope_table(subject, by(subject.observations, "group"), "group")
