"""Governance reports: what one model's routing did over a period, as one
self-contained HTML page for model-risk officers and SREs (docs/reports.md).

- ``calibration-health``: the weighted reliability diagram; ECE and Tier-1 accuracy
  with its interval against the policy's ``max_ece`` and ``target_tier1_accuracy``;
  PSI per bucket against the calibrator artefact's reference; each domain and group.
- ``routing-distribution``: the tiers' and the reasons' shares per bucket, and the
  automation rate.
- ``experiment``: each arm's automation rate, Tier-1 error rate with its counts and
  review volume, and its always-valid p-value against the control look by look.
- ``threshold-review``: every policy revision of the period that touched the model:
  who proposed and who approved it, why (the monitor's evidence laid out), what
  changed.

Every figure is the calibration monitor's own: the weights, intervals and tests of
``monitor.estimates`` and ``monitor.checks``, so a report over a window says what
``hitl monitor check`` says over it. Pure: the observations, the policy and its
revisions in, a string of HTML out; reading the feedback log and the registry is the
command's (``monitor.report_cli``). Charts are matplotlib figures drawn as inline
SVG; the page loads nothing (no script, font, stylesheet or image), and its
Content-Security-Policy forbids it to."""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibrators.metrics import Bins
from monitor.checks import ESTIMATOR, MODEL, Findings, Limits, Reference, Scope, check_model
from monitor.estimates import AUTOMATED, TIERS, Health, by, class_psi, confidence_psi, health
from monitor.observations import Observation
from monitor.sequential import TEST, ArmCounts, Comparison
from sidecar.core.decision import Reason
from sidecar.core.diff import FieldChange
from sidecar.core.policy import ModelPolicy
from sidecar.core.thresholds import ThresholdTable

Floats = npt.NDArray[np.float64]

REASONS = tuple(reason.name for reason in Reason)
# Reasons that say the loop stepped in: always drawn, even when none occurred.
INTERVENTIONS = (Reason.PAUSED.name, Reason.FALLBACK_DRIFT.name)
NONE = "—"
COLOURS = {  # by tier and reason; what the loop does in red and purple
    "AUTOMATED": "#55a868",
    "HUMAN_ASSISTED": "#dd8452",
    "HUMAN_PRIMARY": "#4c72b0",
    "THRESHOLD": "#a9bcd6",
    "RULE": "#4c72b0",
    "AUDIT_SAMPLE": "#ccb974",
    "PAUSED": "#c44e52",
    "FALLBACK_DRIFT": "#8172b3",
}
PSI_OF = {"class": "predicted class"}  # monitor.checks.Findings.psi's keys, for people
BLUE, ORANGE, GREEN, RED, GREY = "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#7f7f7f"


@dataclass(frozen=True, slots=True)
class Period:
    """[since, until) in Unix seconds, cut into ``buckets`` equal buckets."""

    since: float
    until: float
    buckets: int

    def __post_init__(self) -> None:
        if not self.since < self.until or self.buckets < 1:
            raise ValueError(f"an empty period or no bucket: {self}")

    def edges(self) -> Floats:
        edges: Floats = np.linspace(self.since, self.until, self.buckets + 1)
        return edges

    def split(self, observations: Sequence[Observation]) -> list[list[Observation]]:
        """The observations decided in each bucket [e_i, e_i+1), bucket by bucket."""
        inner = self.edges()[1:-1]
        parts: list[list[Observation]] = [[] for _ in range(self.buckets)]
        for o in observations:
            parts[int(np.searchsorted(inner, o.decided_at, side="right"))].append(o)
        return parts


@dataclass(frozen=True, slots=True)
class Revision:
    """A policy revision as the threshold review shows it; ``thresholds`` are the
    model's after it (None: the revision has no such model)."""

    number: int
    created_at: float
    proposed_by: str
    approved_by: str  # "": an operator's tightening, applied at once
    reason: str
    changes: tuple[FieldChange, ...]
    thresholds: ThresholdTable | None

    def touches(self, model: str) -> bool:
        return bool(self.changes_to(model))

    def changes_to(self, model: str) -> list[FieldChange]:
        prefix = f"models.{model}"
        return [c for c in self.changes if c.path == prefix or c.path.startswith(prefix + ".")]


@dataclass(frozen=True)
class Subject:
    """One model over a period, and what was read for the report on it."""

    model: str
    period: Period
    generated_at: float
    policy: ModelPolicy  # in force at the period's end: targets, arms, calibrator
    policy_revision: int
    observations: Sequence[Observation] = ()
    reference: Reference | None = None  # the calibrator artefact's histograms
    # The revision in force at ``since``, then every one made in the period, oldest first.
    revisions: Sequence[Revision] = ()
    limits: Limits = field(default_factory=Limits)
    group_attribute: str = ""


# -- the estimates beyond monitor.estimates ---------------------------------------


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


def evidence(reason: str) -> tuple[str, dict[str, Any] | None, str]:
    """A change's reason as (its summary, the evidence the monitor attached as JSON,
    what followed the summary when that is not JSON: cut short, or by hand).
    ``monitor.actions.reason`` writes "<summary>; evidence <JSON>"."""
    summary, marker, rest = reason.partition("; evidence ")
    if not marker:
        return reason, None, ""
    try:
        parsed = json.loads(rest)
    except ValueError:
        return summary, None, rest
    return (summary, parsed, "") if isinstance(parsed, dict) else (summary, None, rest)


# -- the four reports ------------------------------------------------------------


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


def routing_distribution(subject: Subject) -> str:
    observations = subject.observations
    whole = health(observations, level=subject.limits.level)
    parts = subject.period.split(observations)
    tiers = [health(part).tier_shares if part else None for part in parts]
    reasons = [reason_shares(part) if part else None for part in parts]
    overall = reason_shares(observations)
    shown = [r for r in REASONS if overall.get(r, 0.0) > 0 or r in INTERVENTIONS]
    shown += [r for r in overall if r not in REASONS and overall[r] > 0]
    automated = [None if t is None else t[AUTOMATED] for t in tiers]
    sections = [
        _section("Summary", _routing_summary(whole, overall, shown)),
        _section(
            "Tiers over time",
            _figure(
                _stacked_chart(subject.period, tiers, TIERS, "share of decisions", "tiers"),
                "Each bucket's estimated share of decisions per tier (every recorded decision "
                "counted 1 / inclusion probability times).",
            ),
        ),
        _section(
            "Reasons over time",
            _figure(
                _stacked_chart(subject.period, reasons, shown, "share of decisions", "reasons"),
                "Each bucket's estimated share of decisions per reason. PAUSED: the policy "
                "pauses automation; FALLBACK_DRIFT: the sidecar's drift guard does.",
            ),
        ),
        _section(
            "Automation rate",
            _figure(
                _rate_chart(subject.period, automated, whole.tier_shares[AUTOMATED]),
                "The estimated share of decisions AUTOMATED per bucket; the dashed line is "
                "the period's.",
            ),
        ),
        _section("Per bucket", _routing_table(subject.period, parts, tiers, reasons)),
    ]
    return _page(subject, "routing-distribution", whole, sections)


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


def threshold_review(subject: Subject) -> str:
    period = subject.period
    made = [
        r
        for r in subject.revisions
        if period.since <= r.created_at < period.until and r.touches(subject.model)
    ]
    at_once = sum(1 for r in made if not r.approved_by)
    summary = _facts(
        [
            ("Revisions touching the model", str(len(made))),
            ("Approved by an approver", str(len(made) - at_once)),
            ("Applied at once (an operator's tightening)", str(at_once)),
        ]
    )
    body = [_section("Summary", summary)]
    if any(r.thresholds is not None for r in subject.revisions):
        body.append(
            _section(
                "Thresholds in force",
                _figure(
                    _threshold_chart(subject),
                    "The model's default thresholds over the period, a dotted line at each "
                    "revision; shaded where automation is paused. Domain and arm thresholds "
                    "are in the changes below.",
                ),
            )
        )
    if made:
        body += [_revision_section(subject.model, r) for r in made]
    else:
        body.append(_section("Revisions", "<p>No revision in the period touched the model.</p>"))
    return _page(subject, "threshold-review", None, body, revisions=len(made))


class Report(NamedTuple):
    title: str
    draw: Callable[[Subject], str]


# By the command's name (monitor.report_cli.REPORTS names the same ones).
REPORTS = {
    "calibration-health": Report("Calibration health", calibration_health),
    "routing-distribution": Report("Routing distribution", routing_distribution),
    "experiment": Report("Experiment", experiment),
    "threshold-review": Report("Threshold review", threshold_review),
}


def render(kind: str, subject: Subject) -> str:
    """The report called kind (a key of REPORTS) on subject, as an HTML page."""
    return REPORTS[kind].draw(subject)


# -- calibration health ----------------------------------------------------------


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


# -- routing distribution --------------------------------------------------------


def _routing_summary(whole: Health, reasons: Mapping[str, float], shown: Sequence[str]) -> str:
    rows = [
        ("Automation rate", _percent(whole.tier_shares[AUTOMATED])),
        *((f"Tier {tier}", _percent(whole.tier_shares.get(tier))) for tier in TIERS),
    ]
    table = _table(
        ["reason", "share of decisions", "decisions (est.)"],
        [
            [r, _percent(reasons.get(r, 0.0)), f"{reasons.get(r, 0.0) * whole.decisions:,.0f}"]
            for r in shown
        ],
    )
    return _facts(rows) + table


def _routing_table(
    period: Period,
    parts: Sequence[Sequence[Observation]],
    tiers: Sequence[Mapping[str, float] | None],
    reasons: Sequence[Mapping[str, float] | None],
) -> str:
    rows = []
    for start, part, t, r in zip(period.edges()[:-1], parts, tiers, reasons, strict=True):
        decisions = sum(1.0 / o.inclusion_probability for o in part)
        rows.append(
            [
                _when(float(start)),
                str(len(part)),
                f"{decisions:,.0f}",
                *(NONE if t is None else _percent(t[tier]) for tier in TIERS),
                *(NONE if r is None else _percent(r[reason]) for reason in INTERVENTIONS),
            ]
        )
    headers = ["from", "recorded", "decisions (est.)", *TIERS, *INTERVENTIONS]
    return _table(headers, rows)


# -- experiment ------------------------------------------------------------------


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


def _control_counts(last: Findings) -> ArmCounts | None:
    """The control's counts, as every comparison holds them (None without one)."""
    first = next(iter(last.experiments.values()), None)
    return None if first is None else first.control


# -- threshold review ------------------------------------------------------------


def _revision_section(model: str, revision: Revision) -> str:
    approval = revision.approved_by or "applied at once: tightening"
    summary, attached, rest = evidence(revision.reason)
    facts = _facts(
        [
            ("Time", _when(revision.created_at)),
            ("Proposed by", revision.proposed_by or NONE),
            ("Approved by", approval),
            ("Reason", summary or NONE),
        ]
    )
    if attached is not None:
        facts += "<h4>Evidence</h4>" + _table(
            ["field", "value"],
            [[key, _value(key, value)] for key, value in _flat(attached)],
            "quoted",
        )
    elif rest:
        facts += f"<h4>Evidence (as recorded)</h4><pre>{_e(rest)}</pre>"
    changes = revision.changes_to(model)
    others = len(revision.changes) - len(changes)
    table = _table(
        ["field", "before", "after"],
        [[c.path, c.before or "(absent)", c.after or "(absent)"] for c in changes],
        "quoted",
    )
    note = f"<p>And {others} changes elsewhere in the policy.</p>" if others else ""
    return _section(
        f"Revision {revision.number}", facts + "<h4>Changes</h4>" + table + note, "revision"
    )


def _flat(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _value(key: str, value: Any) -> str:
    if key.endswith("window") and isinstance(value, list) and len(value) == 2:
        return f"{_when(float(value[0]))} to {_when(float(value[1]))}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_value("", item) for item in value)
    return str(value)


# -- charts ------------------------------------------------------------------------


def _svg(figure: Figure, name: str) -> str:
    """The figure as an inline <svg> element. Its ids are salted with name, so two
    charts on one page never share one; text stays text (the page's fonts)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_e(name)}" ', 1)


def _time_axis(axes: Axes, period: Period) -> None:
    """The period along x (Unix seconds), ticks labelled in UTC."""
    ticks = np.linspace(period.since, period.until, min(period.buckets, 6) + 1)
    shown = "%m-%d %H:%M" if period.until - period.since <= 3 * 86400 else "%Y-%m-%d"
    labels = [datetime.fromtimestamp(float(t), UTC).strftime(shown) for t in ticks]
    axes.set_xticks(ticks, labels, rotation=30, ha="right")
    axes.set_xlim(period.since, period.until)
    axes.set_xlabel("UTC")


def _reliability_chart(bins: Bins) -> str:
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    left, width = bins.edges[:-1], np.diff(bins.edges)
    filled = bins.count > 0
    centre = (left + width / 2)[filled]
    accuracy, confidence = bins.accuracy[filled], bins.confidence[filled]
    top.bar(centre, accuracy, width[filled], color=BLUE, edgecolor="white", label="accuracy")
    top.vlines(centre, accuracy, confidence, color=RED, linewidth=2, label="gap")
    top.scatter(
        centre, confidence, marker="D", s=16, color="black", zorder=3, label="mean confidence"
    )
    top.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (weighted)")
    top.legend(loc="upper left", fontsize="small")
    mass = (bins.count if bins.mass is None else bins.mass).astype(np.float64)
    share = mass / max(float(mass.sum()), 1e-300)
    bottom.bar(left, share, width, align="edge", color=GREEN, edgecolor="white")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("calibrated confidence")
    bottom.set_ylabel("weight")
    return _svg(figure, "reliability")


def _accuracy_chart(subject: Subject, healths: Sequence[Health | None]) -> str:
    period, policy = subject.period, subject.policy
    middles = _middles(period)
    figure = Figure(figsize=(7.6, 5.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for x, h in zip(middles, healths, strict=True):
        if h is None or h.tier1_accuracy is None or h.tier1_interval is None:
            continue
        low, high = h.tier1_interval
        top.errorbar(
            [x],
            [h.tier1_accuracy],
            yerr=[[h.tier1_accuracy - low], [high - h.tier1_accuracy]],
            fmt="o",
            color=BLUE,
            capsize=3,
        )
    if policy.target_tier1_accuracy is not None:
        top.axhline(
            policy.target_tier1_accuracy,
            color=RED,
            linestyle="--",
            linewidth=1,
            label=f"target {policy.target_tier1_accuracy:g}",
        )
        top.legend(loc="lower left", fontsize="small")
    top.set_ylabel("Tier-1 accuracy")
    eces = [np.nan if h is None or h.ece is None else h.ece for h in healths]
    bottom.plot(middles, eces, marker="o", color=ORANGE)
    if policy.max_ece is not None:
        bottom.axhline(
            policy.max_ece,
            color=RED,
            linestyle="--",
            linewidth=1,
            label=f"max_ece {policy.max_ece:g}",
        )
        bottom.legend(loc="upper left", fontsize="small")
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("ECE (weighted)")
    _time_axis(bottom, period)
    return _svg(figure, "tier1-accuracy")


def _psi_chart(
    period: Period, series: Mapping[str, Sequence[float]], alarm: float | None, thin: list[bool]
) -> str:
    middles = np.array(_middles(period))
    figure = Figure(figsize=(7.6, 3.4), layout="constrained")
    axes = figure.subplots()
    hollow = np.array(thin)
    for (name, values), colour in zip(series.items(), (BLUE, ORANGE), strict=False):
        y = np.array(values, dtype=np.float64)
        axes.plot(middles, y, color=colour, label=name)
        axes.scatter(middles[~hollow], y[~hollow], color=colour, zorder=3)
        axes.scatter(middles[hollow], y[hollow], facecolors="white", edgecolors=colour, zorder=3)
    if alarm is not None:
        axes.axhline(alarm, color=RED, linestyle="--", linewidth=1, label=f"psi_alarm {alarm:g}")
    axes.set_ylim(bottom=0)
    axes.set_ylabel("PSI")
    axes.legend(loc="upper left", fontsize="small")
    _time_axis(axes, period)
    return _svg(figure, "psi")


def _stacked_chart(
    period: Period,
    shares: Sequence[Mapping[str, float] | None],
    names: Sequence[str],
    ylabel: str,
    name: str,
) -> str:
    edges = period.edges()
    lefts, width = edges[:-1], (edges[-1] - edges[0]) / period.buckets
    figure = Figure(figsize=(7.6, 3.8), layout="constrained")
    axes = figure.subplots()
    bottom = np.zeros(period.buckets)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, key in enumerate(names):
        heights = np.array([0.0 if s is None else s.get(key, 0.0) for s in shares])
        colour = COLOURS.get(key, cycle[i % len(cycle)])
        axes.bar(
            lefts,
            heights,
            width,
            bottom=bottom,
            align="edge",
            color=colour,
            edgecolor="white",
            linewidth=0.5,
            label=key,
        )
        bottom += heights
    axes.set_ylim(0, 1)
    axes.set_ylabel(ylabel)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    _time_axis(axes, period)
    return _svg(figure, name)


def _rate_chart(period: Period, rates: Sequence[float | None], overall: float) -> str:
    middles = _middles(period)
    figure = Figure(figsize=(7.6, 3.0), layout="constrained")
    axes = figure.subplots()
    axes.plot(middles, [np.nan if r is None else r for r in rates], marker="o", color=GREEN)
    axes.axhline(overall, color=GREY, linestyle="--", linewidth=1, label=f"period {overall:.1%}")
    axes.set_ylim(0, 1)
    axes.set_ylabel("automated")
    axes.legend(loc="lower left", fontsize="small")
    _time_axis(axes, period)
    return _svg(figure, "automation")


def _p_value_chart(subject: Subject, arms: Sequence[str], history: Sequence[Look]) -> str:
    x = [look.at for look in history]
    figure = Figure(figsize=(7.6, 5.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    control = subject.policy.experiment.arms[0].name if subject.policy.experiment else ""
    rates = [_error_rate(_control_counts(look.findings)) for look in history]
    top.plot(x, rates, marker="o", color=GREY, label=f"{control} (control)")
    for i, arm in enumerate(arms):
        colour = cycle[(i + 1) % len(cycle)]
        arm_rates = [_error_rate(look.findings.experiments[arm].arm) for look in history]
        top.plot(x, arm_rates, marker="o", color=colour, label=arm)
        p = [look.findings.experiments[arm].p_value for look in history]
        bottom.plot(x, p, marker="o", color=colour, label=arm)
    top.set_ylim(bottom=0)
    top.set_ylabel("Tier-1 error rate")
    top.legend(loc="upper left", fontsize="small")
    bottom.axhline(
        subject.limits.alpha,
        color=RED,
        linestyle="--",
        linewidth=1,
        label=f"alpha {subject.limits.alpha:g}",
    )
    bottom.set_yscale("log")
    lowest = min([subject.limits.alpha, *(_p_floor(look, arms) for look in history)])
    bottom.set_ylim(max(lowest / 10, 1e-12), 1.5)
    bottom.set_ylabel("always-valid p-value")
    bottom.legend(loc="lower left", fontsize="small")
    _time_axis(bottom, subject.period)
    return _svg(figure, "p-value")


def _error_rate(counts: ArmCounts | None) -> float:
    return math.nan if counts is None else counts.error_rate


def _p_floor(look: Look, arms: Sequence[str]) -> float:
    return min((look.findings.experiments[arm].p_value for arm in arms), default=1.0)


def _threshold_chart(subject: Subject) -> str:
    period = subject.period
    figure = Figure(figsize=(7.6, 3.4), layout="constrained")
    axes = figure.subplots()
    steps = [r for r in subject.revisions if r.created_at < period.until]
    starts = [max(r.created_at, period.since) for r in steps]
    ends = [*starts[1:], period.until]
    for revision, start, end in zip(steps, starts, ends, strict=True):
        table = revision.thresholds
        if table is None:
            continue
        x = [start, end]
        axes.plot(x, [table.default.t_high] * 2, color=BLUE, linewidth=2)
        axes.plot(x, [table.default.t_low] * 2, color=ORANGE, linewidth=2)
        if table.default.paused:
            axes.axvspan(x[0], x[1], color=RED, alpha=0.12, linewidth=0)
        if revision.created_at >= period.since:
            axes.axvline(x[0], color=GREY, linestyle=":", linewidth=1)
            axes.annotate(
                f"r{revision.number}",
                (x[0], 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10),
                textcoords="offset points",
                fontsize="small",
            )
    axes.plot([], [], color=BLUE, linewidth=2, label="t_high")
    axes.plot([], [], color=ORANGE, linewidth=2, label="t_low")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("threshold")
    axes.legend(loc="lower left", fontsize="small")
    _time_axis(axes, period)
    return _svg(figure, "thresholds")


def _middles(period: Period) -> list[float]:
    edges = period.edges()
    return [float(m) for m in (edges[:-1] + edges[1:]) / 2]


# -- the page ----------------------------------------------------------------------

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1d1d1f;margin:0 auto;max-width:64rem;padding:1.5rem 2rem 3rem}
h1{font-size:1.6rem;margin:0 0 .8rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;
border-bottom:1px solid #d0d0d5;padding-bottom:.2rem}h4{margin:1rem 0 .3rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d5;padding:.25rem .55rem;text-align:left;vertical-align:top}
table.quoted{table-layout:fixed;width:100%}table.quoted th:first-child{width:35%}
table.quoted td{overflow-wrap:break-word}
th{background:#f3f3f6}table.facts th{width:18rem;font-weight:600}
figure{margin:.5rem 0 1rem}figcaption{color:#55555a;font-size:.9rem;max-width:48rem}
svg{max-width:100%;height:auto;display:block}code,pre{font-family:ui-monospace,
"DejaVu Sans Mono",monospace;font-size:.9em}pre{white-space:pre-wrap;background:#f6f6f8;
padding:.5rem}section.revision{border-left:3px solid #4c72b0;padding-left:1rem}
footer{margin-top:2.5rem;color:#6e6e73;font-size:.85rem}
@media print{body{max-width:none;padding:0}section{break-inside:avoid}}
"""
# Nothing may be fetched: the page is complete as written (docs/reports.md).
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _page(
    subject: Subject, kind: str, whole: Health | None, sections: Sequence[str], revisions: int = 0
) -> str:
    period = subject.period
    title = f"{REPORTS[kind].title}: model {subject.model}"
    volume = (
        f"{revisions} policy revisions in the period touched the model"
        if whole is None
        else f"{whole.recorded:,} recorded decisions ({whole.labelled:,} labelled), standing "
        f"for an estimated {whole.decisions:,.0f} decisions"
    )
    facts = _facts(
        [
            ("Model", subject.model),
            (
                "Period",
                f"{_when(period.since)} to {_when(period.until)} ({period.buckets} buckets)",
            ),
            ("Generated", _when(subject.generated_at)),
            ("Policy", f"revision {subject.policy_revision}, in force at the period's end"),
            ("Estimator", ESTIMATOR),
            ("Data", volume),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>{facts}</header>\n<main>\n{''.join(sections)}</main>\n"
        f"<footer>hitl report {_e(kind)}: read from the feedback service's database and the "
        "policy registry, changing neither. Self-contained: this page loads nothing.</footer>\n"
        "</body>\n</html>\n"
    )


def _section(title: str, body: str, css: str = "") -> str:
    kind = f' class="{css}"' if css else ""
    return f"<section{kind}>\n<h2>{_e(title)}</h2>\n{body}\n</section>\n"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """css "quoted": its cells hold values as recorded (hashes, JSON), wrapped to fit."""
    if not rows:
        return "<p>None.</p>"
    kind = f' class="{css}"' if css else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: float | None) -> str:
    return NONE if value is None or math.isnan(value) else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _interval(bounds: tuple[float, float] | None) -> str:
    return NONE if bounds is None else f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _limit(value: float | None) -> str:
    return "not set" if value is None else f"{value:g}"
