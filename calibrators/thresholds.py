"""Routing thresholds with a finite-sample guarantee.

``t_high`` is the lowest confidence threshold whose automated set (conf >= t) has a
one-sided Clopper-Pearson lower confidence bound on accuracy at or above the target.
That is a statement a model-risk officer can defend ("with 95% confidence, Tier-1
accuracy is at least 99%"), unlike a point estimate, which is optimistic exactly
where the automated set is small.

Many thresholds are tested on one data set, so taking the lowest one that passes
would overstate the confidence (a multiple-comparison error). Instead thresholds
are tested in a fixed sequence, from high to low, and the walk stops at the first
that fails (fixed-sequence testing, as in Bauer 1991 and Angelopoulos et al.'s
"Learn then Test"): the chance that the recommended threshold's true accuracy is
below the target is then at most 1 - level, provided the sequence does not depend
on correctness. Ours depends only on the target, the level and the row count: it
starts at the threshold automating ``first_tested`` rows, the fewest at which
errors at half the target's error rate still pass (capped at half the rows, never
below ``rows_needed``, where a flawless record first passes). Starting where a set
of realistic accuracy can pass keeps one unlucky error among the very top rows
from ending the walk before it begins.

``recommend_thresholds`` applies this per model and per domain: ``t_high`` for the
Tier-1 target, ``t_low`` for a second, lower target (the accuracy at which the
model's suggestion is worth showing a reviewer), and the model default for a domain
too small to bound, with a warning. Each recommendation holds at the stated level
for its own segment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta


@dataclass(frozen=True)
class Recommendation:
    threshold: float
    automated_share: float
    accuracy: float
    accuracy_lower_bound: float
    support: int


def clopper_pearson_lower(
    successes: npt.ArrayLike, trials: npt.ArrayLike, level: float
) -> npt.NDArray[np.float64]:
    """One-sided lower bound at confidence level (0 where successes is 0)."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1.0 - level, k, n - k + 1.0)
    return np.where(k > 0, np.nan_to_num(bound, nan=0.0), 0.0)


def rows_needed(target: float, level: float) -> int:
    """Rows above the first threshold tested: twice the n at which even a perfect
    record (n of n correct) first bounds accuracy at the target."""
    reachable = math.ceil(math.log(1.0 - level) / math.log(target)) if 0 < target < 1 else 1
    return 2 * reachable


def first_tested(target: float, level: float, rows: int) -> int:
    """Rows automated by the first threshold tested (see the module docstring)."""
    floor = rows_needed(target, level)
    # The answer is near 1.3 x floor for usual targets; 20 x bounds the search.
    n = np.arange(floor, min(max(floor, rows // 2), 20 * floor) + 1)
    errors = np.floor(n * (1.0 - target) / 2.0)
    passing = np.flatnonzero(clopper_pearson_lower(n - errors, n, level) >= target)
    return int(n[passing[0]]) if passing.size else int(n[-1])


def recommend_threshold(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    target: float,
    level: float = 0.95,
    weights: npt.ArrayLike | None = None,
) -> Recommendation | None:
    """The lowest threshold reached by the fixed sequence, or None if the first fails.
    With weights (a sampled dataset's inverse inclusion probabilities, label shift's
    class weights, or their product), accuracy is the weighted share and the bound is
    Clopper-Pearson on Kish's effective sample size, run at half the error rate:
    alone, that approximation missed its level (7 % of seeded draws at a nominal 5 %,
    tests/unit/calibrators/test_shift.py); at half, 4 %."""
    if weights is not None:
        level = 1.0 - (1.0 - level) / 2.0
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    successes, trials, share = _cumulative(
        ok, None if weights is None else np.asarray(weights)[order]
    )
    # A threshold equal to conf[i] automates every row with conf >= conf[i]: take the
    # last index of each run of equal confidences.
    last = np.r_[conf[1:] != conf[:-1], True]
    lower = clopper_pearson_lower(successes, trials, level)
    start = first_tested(target, level, conf.shape[0])
    candidates = np.flatnonzero(last & (trials >= start))
    passes = lower[candidates] >= target
    failed = np.flatnonzero(~passes)
    tested = candidates if failed.size == 0 else candidates[: failed[0]]
    if tested.size == 0:
        return None
    i = int(tested[-1])
    return Recommendation(
        threshold=float(conf[i]),
        automated_share=float(share[i]),
        accuracy=float(successes[i] / trials[i]),
        accuracy_lower_bound=float(lower[i]),
        support=round(float(trials[i])),
    )


def _cumulative(
    ok: npt.NDArray[np.bool_], weights: npt.NDArray[np.float64] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """For the rows above each cut (rows in descending confidence): successes and
    trials for the bound (with weights, scaled to Kish's effective sample size
    (sum w)^2 / sum w^2, Kish 1965), and the share of all (weighted) rows automated."""
    if weights is None:
        trials = np.arange(1, ok.shape[0] + 1, dtype=np.float64)
        return np.cumsum(ok).astype(np.float64), trials, trials / ok.shape[0]
    w = np.asarray(weights, dtype=np.float64)
    total, hits, squares = np.cumsum(w), np.cumsum(w * ok), np.cumsum(w * w)
    with np.errstate(invalid="ignore", divide="ignore"):
        effective = np.where(squares > 0, total * total / squares, 0.0)
        accuracy = np.where(total > 0, hits / total, 0.0)
    return accuracy * effective, effective, total / total[-1]


PER_MILLION = 1_000_000
DEFAULT = "default"


@dataclass(frozen=True)
class SegmentThresholds:
    """Thresholds for one segment and what they do on its validation rows."""

    segment: str
    t_high: float
    t_low: float
    rows: int
    automated_share: float
    assisted_share: float
    primary_share: float
    reviews_per_million: float  # HUMAN_ASSISTED + HUMAN_PRIMARY, before audit sampling
    tier1_accuracy: float | None  # None when nothing is automated
    tier1_lower_bound: float
    uses_default: bool = False


@dataclass(frozen=True)
class ThresholdReport:
    target: float
    low_target: float
    level: float
    default: SegmentThresholds
    domains: dict[str, SegmentThresholds] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def policy_fragment(self, model: str) -> dict[str, Any]:
        """The thresholds in the policy file's schema, for models.<model>."""
        entry: dict[str, Any] = {
            "thresholds": _pair(self.default),
            "target_tier1_accuracy": self.target,
        }
        own = {name: _pair(d) for name, d in self.domains.items() if not d.uses_default}
        if own:
            entry["domains"] = own
        return {"models": {model: entry}}


def _pair(s: SegmentThresholds) -> dict[str, float]:
    return {"t_high": s.t_high, "t_low": s.t_low}


class ThresholdError(ValueError):
    """No defensible threshold: too few rows, or the target is out of reach. Says
    the best bound any threshold reached (and on what share of rows), if any."""

    def __init__(
        self, message: str, best_bound: float = 0.0, best_share: float = 0.0, rows: int = 0
    ) -> None:
        super().__init__(message)
        self.best_bound = best_bound
        self.best_share = best_share
        self.rows = rows


def best_bound(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, level: float
) -> tuple[float, float]:
    """The highest lower bound on Tier-1 accuracy any threshold reaches, and the share
    of rows that threshold automates: how far a missed target is."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if conf.size == 0:
        return 0.0, 0.0
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    trials = np.arange(1, conf.shape[0] + 1)
    last = np.r_[conf[1:] != conf[:-1], True]
    lower = np.where(last, clopper_pearson_lower(np.cumsum(ok), trials, level), 0.0)
    i = int(np.argmax(lower))
    return float(lower[i]), float(trials[i] / conf.shape[0])


def recommend_thresholds(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    target: float,
    low_target: float,
    level: float = 0.95,
    domains: npt.NDArray[np.str_] | None = None,
    weights: npt.NDArray[np.float64] | None = None,
) -> ThresholdReport:
    """Model-wide thresholds, and per-domain ones where a domain's rows allow; with
    weights, each row counted with its weight (``recommend_threshold``)."""
    if not 0.0 < low_target <= target < 1.0:
        raise ThresholdError(f"need 0 < low target ({low_target}) <= target ({target}) < 1")
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    w = np.ones(conf.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    every = _Rows(conf, ok, w)
    default, problem = _segment(DEFAULT, every, target, low_target, level)
    if default is None:
        bound, share = best_bound(conf, ok, level)
        raise ThresholdError(problem, bound, share, int(conf.shape[0]))
    segments: dict[str, SegmentThresholds] = {}
    warnings: list[str] = []
    if domains is not None:
        for name in sorted(set(domains.tolist())):
            rows = every.where(domains == name)
            own, problem = _segment(name, rows, target, low_target, level)
            if own is None:
                warnings.append(f"domain {name!r}: {problem}; the model default applies")
                own = _measure(name, rows, default.t_high, default.t_low, level)
            segments[name] = own
    return ThresholdReport(target, low_target, level, default, segments, tuple(warnings))


@dataclass(frozen=True)
class _Rows:
    """A segment's rows: each one's confidence, whether its prediction is right, and
    its weight."""

    conf: npt.NDArray[np.float64]
    ok: npt.NDArray[np.bool_]
    w: npt.NDArray[np.float64]

    def where(self, mask: npt.NDArray[np.bool_]) -> _Rows:
        return _Rows(self.conf[mask], self.ok[mask], self.w[mask])


def _segment(
    name: str, rows: _Rows, target: float, low_target: float, level: float
) -> tuple[SegmentThresholds | None, str]:
    conf, ok, w = rows.conf, rows.ok, rows.w
    needed = rows_needed(target, level)
    if conf.shape[0] < needed:
        return None, (
            f"{conf.shape[0]} rows; bounding accuracy at {target} with {level:.0%} "
            f"confidence needs at least {needed}"
        )
    weights = None if bool((w == 1.0).all()) else w
    high = recommend_threshold(conf, ok, target, level, weights)
    if high is None:
        return None, (
            f"no threshold bounds Tier-1 accuracy at {target} with {level:.0%} confidence "
            f"on {conf.shape[0]} rows"
        )
    low = recommend_threshold(conf, ok, low_target, level, weights)
    t_low = high.threshold if low is None else min(low.threshold, high.threshold)
    return _measure(name, rows, _up(high.threshold), _up(t_low), level, own=True), ""


def _up(threshold: float) -> float:
    """Round up to 6 decimals for the policy file: never automates a row the bound
    did not cover (and leaves room for float32 rounding in the sidecar)."""
    return math.ceil(threshold * 1e6) / 1e6


def _measure(
    name: str, rows: _Rows, t_high: float, t_low: float, level: float, own: bool = False
) -> SegmentThresholds:
    """What thresholds do on a segment's rows, each counted with its weight."""
    conf, ok, w = rows.conf, rows.ok, rows.w
    total = float(w.sum())
    automated = conf >= t_high
    primary = conf < t_low
    auto_weight = float(w[automated].sum())
    share = auto_weight / total
    hits = float((w * ok)[automated].sum())
    squares = float(np.square(w[automated]).sum())
    effective = auto_weight * auto_weight / squares if squares else 0.0
    accuracy = hits / auto_weight if auto_weight else None
    bound = (
        float(clopper_pearson_lower(accuracy * effective, effective, level))
        if accuracy is not None
        else 0.0
    )
    return SegmentThresholds(
        segment=name,
        t_high=t_high,
        t_low=t_low,
        rows=int(conf.shape[0]),
        automated_share=share,
        assisted_share=float(w[~automated & ~primary].sum()) / total,
        primary_share=float(w[primary].sum()) / total,
        reviews_per_million=(1.0 - share) * PER_MILLION,
        tier1_accuracy=accuracy,
        tier1_lower_bound=bound,
        uses_default=not own,
    )
