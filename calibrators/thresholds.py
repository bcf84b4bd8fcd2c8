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
below the target is then at most 1 - level. The sequence starts at the highest
threshold automating twice the rows at which the target becomes reachable at all
(``n`` with ``target ** n <= 1 - level``), so the first test tolerates an error or
two; that start depends on the confidences only, not on correctness, so the
sequence is fixed given the confidences."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def recommend_threshold(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, target: float, level: float = 0.95
) -> Recommendation | None:
    """The lowest threshold reached by the fixed sequence, or None if the first fails."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    successes = np.cumsum(ok)
    trials = np.arange(1, conf.shape[0] + 1)
    # A threshold equal to conf[i] automates every row with conf >= conf[i]: take the
    # last index of each run of equal confidences.
    last = np.r_[conf[1:] != conf[:-1], True]
    lower = clopper_pearson_lower(successes, trials, level)
    reachable = math.ceil(math.log(1.0 - level) / math.log(target)) if 0 < target < 1 else 1
    start = 2 * reachable
    candidates = np.flatnonzero(last & (trials >= start))
    passes = lower[candidates] >= target
    failed = np.flatnonzero(~passes)
    tested = candidates if failed.size == 0 else candidates[: failed[0]]
    if tested.size == 0:
        return None
    i = int(tested[-1])
    return Recommendation(
        threshold=float(conf[i]),
        automated_share=float(trials[i] / conf.shape[0]),
        accuracy=float(successes[i] / trials[i]),
        accuracy_lower_bound=float(lower[i]),
        support=int(trials[i]),
    )
