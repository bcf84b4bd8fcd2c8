"""What a policy's thresholds actually do on a labelled test file: per tier the share
of rows, and Tier-1 accuracy with a two-sided Clopper-Pearson interval, for the model
and for each domain the data names, against the target. A target is missed when the
whole interval lies below it. Only thresholds are applied: rules and experiment arms
need request attributes the test file does not carry. Rows with weights (a sampled
dataset's) count with them: shares and accuracy are weighted, and the interval is on
Kish's effective sample size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from sidecar.core.thresholds import ThresholdTable


@dataclass(frozen=True)
class TierCheck:
    segment: str
    rows: int
    t_high: float
    t_low: float
    automated_share: float
    assisted_share: float
    primary_share: float
    tier1_accuracy: float | None
    tier1_interval: tuple[float, float] | None
    target: float | None
    missed: bool  # the whole interval lies below the target


def interval(hits: float, trials: float, level: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for hits of trials at confidence level
    (fractional counts, for weighted rows, are taken as they are)."""
    tail = (1.0 - level) / 2.0
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, trials - hits + 1))
    high = 1.0 if hits == trials else float(beta.ppf(1.0 - tail, hits + 1, trials - hits))
    return low, high


def check_thresholds(
    probabilities: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    table: ThresholdTable,
    target: float | None,
    level: float,
    domains: npt.NDArray[np.str_] | None = None,
    weights: npt.NDArray[np.float64] | None = None,
) -> list[TierCheck]:
    """The model's check (segment "all", its default or domain thresholds row by row),
    then one per domain the data names."""
    conf = probabilities.max(axis=1)
    ok = probabilities.argmax(axis=1) == labels
    names = np.full(conf.shape[0], "") if domains is None else domains
    w = np.ones(conf.shape[0]) if weights is None else weights
    checks = [_segment("all", conf, ok, w, names, table, target, level)]
    for name in sorted(set(names.tolist()) - {""}):
        rows = names == name
        checks.append(
            _segment(name, conf[rows], ok[rows], w[rows], names[rows], table, target, level)
        )
    return checks


def _segment(
    name: str,
    conf: npt.NDArray[np.float64],
    ok: npt.NDArray[np.bool_],
    w: npt.NDArray[np.float64],
    domains: npt.NDArray[np.str_],
    table: ThresholdTable,
    target: float | None,
    level: float,
) -> TierCheck:
    high = np.array([table.for_domain(str(d)).t_high for d in domains])
    low = np.array([table.for_domain(str(d)).t_low for d in domains])
    automated, primary = conf >= high, conf < low
    total, mass = float(w.sum()), float(w[automated].sum())
    accuracy = float(w[automated & ok].sum()) / mass if mass else None
    effective = mass * mass / float(np.square(w[automated]).sum()) if mass else 0.0
    bounds = None if accuracy is None else interval(accuracy * effective, effective, level)
    shown = table.for_domain("" if name == "all" else name)
    return TierCheck(
        segment=name,
        rows=int(conf.shape[0]),
        t_high=shown.t_high,
        t_low=shown.t_low,
        automated_share=mass / total,
        assisted_share=float(w[~automated & ~primary].sum()) / total,
        primary_share=float(w[primary].sum()) / total,
        tier1_accuracy=accuracy,
        tier1_interval=bounds,
        target=target,
        missed=bool(target is not None and bounds is not None and bounds[1] < target),
    )
