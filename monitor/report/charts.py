"""The reports' charts: matplotlib figures drawn as inline SVG, text kept as text,
time along x in UTC, colours fixed by tier and reason. Each takes figures already
computed and returns an ``<svg>`` element; nothing here estimates."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from calibrators.metrics import Bins
from monitor.estimates import Health
from monitor.report.measures import Look, _control_counts
from monitor.report.page import _e
from monitor.report.subject import Period, Subject
from monitor.sequential import ArmCounts

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
BLUE, ORANGE, GREEN, RED, GREY = "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#7f7f7f"


def _limit_line(
    axes: Axes, value: float | None, name: str, where: Literal["lower left", "upper left"]
) -> None:
    """A policy's limit as a dashed red line with its legend entry (none when unset)."""
    if value is None:
        return
    axes.axhline(value, color=RED, linestyle="--", linewidth=1, label=f"{name} {value:g}")
    axes.legend(loc=where, fontsize="small")


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
    _limit_line(top, policy.target_tier1_accuracy, "target", "lower left")
    top.set_ylabel("Tier-1 accuracy")
    eces = [np.nan if h is None or h.ece is None else h.ece for h in healths]
    bottom.plot(middles, eces, marker="o", color=ORANGE)
    _limit_line(bottom, policy.max_ece, "max_ece", "upper left")
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
    # Plain tick labels: the default's mathtext would look for STIX fonts the machine
    # may not have (and say so on stderr), and SVG text needs none of them.
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bottom.yaxis.set_minor_formatter(NullFormatter())
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
