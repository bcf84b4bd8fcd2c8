"""The routing-distribution report: the tiers' and the reasons' estimated shares
per bucket, and the automation rate, each recorded decision standing for
1 / inclusion probability of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.estimates import AUTOMATED, TIERS, Health, health
from monitor.observations import Observation
from monitor.report.charts import _rate_chart, _stacked_chart
from monitor.report.measures import REASONS, reason_shares
from monitor.report.page import NONE, _facts, _figure, _page, _percent, _section, _table, _when
from monitor.report.subject import Period, Subject
from sidecar.core.decision import Reason

# Reasons that say the loop stepped in: always drawn, even when none occurred.
INTERVENTIONS = (Reason.PAUSED.name, Reason.FALLBACK_DRIFT.name)


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
