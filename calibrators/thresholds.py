"""Routing thresholds with a finite-sample guarantee.

``t_high`` is the lowest confidence threshold whose automated set (conf >= t) has a
one-sided Clopper-Pearson lower confidence bound on accuracy at or above the target.
That is a statement a model-risk officer can defend ("with 95% confidence, Tier-1
accuracy is at least 99%"), unlike a point estimate, which is optimistic exactly
where the automated set is small."""

from __future__ import annotations

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
    """The lowest threshold meeting the target with the bound, or None if none does."""
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
    meets = last & (lower >= target)
    if not meets.any():
        return None
    i = int(np.flatnonzero(meets)[-1])
    return Recommendation(
        threshold=float(conf[i]),
        automated_share=float(trials[i] / conf.shape[0]),
        accuracy=float(successes[i] / trials[i]),
        accuracy_lower_bound=float(lower[i]),
        support=int(trials[i]),
    )
