"""Pick a calibration method by what routing needs, measured out of fold.

Each candidate is fitted on k - 1 folds and predicts the held-out fold; the pooled
out-of-fold predictions are scored. With a Tier-1 target (what ``hitl calibrate fit``
passes), the method that automates the largest share of rows with its accuracy bound
at the target wins (``thresholds.recommend_threshold`` on the out-of-fold
confidences), lower NLL breaking ties: a method that fits well by NLL but cannot
produce a defensible threshold is of no use to routing. Without a target, the lowest
mean NLL wins. A method that changes the predicted class (vector scaling, one-vs-rest)
for more than ``CLASS_CHANGE_LIMIT`` of the rows and loses accuracy out of fold
against the raw argmax is never chosen. Every method's figures are reported, and the
runner-up beside the choice. Folds are shuffled with a fixed seed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold
from tqdm import tqdm

from calibrators.methods import Method, applicable
from calibrators.metrics import Floats, Ints, ece, nll
from calibrators.thresholds import recommend_threshold

FOLDS = 5
CLASS_CHANGE_LIMIT = 0.01  # share of rows whose predicted class a method may change


@dataclass(frozen=True)
class Score:
    method: str
    nll: float
    nll_sd: float
    ece: float  # of the pooled out-of-fold predictions
    automated: float = 0.0  # share automated at the target with its bound (0: none)
    bound: float | None = None  # that set's Tier-1 accuracy lower bound
    accuracy: float = 0.0  # out-of-fold accuracy of its argmax
    class_changed: float = 0.0  # share of rows whose argmax differs from the raw one
    excluded: str = ""  # why it may not be chosen


@dataclass(frozen=True)
class Selection:
    chosen: str
    runner_up: str | None
    scores: tuple[Score, ...]  # best first
    folds: int
    seed: int


def select_method(
    logits: Floats,
    labels: Ints,
    candidates: Iterable[Method] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    progress: bool = False,
    target: float | None = None,
    level: float = 0.95,
    weights: Floats | None = None,
) -> Selection:
    """weights: each row's (None: every row counts once), in the fits and the scores."""
    methods = list(candidates) if candidates is not None else applicable(logits.shape[1])
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(logits))
    work = tqdm(
        total=len(methods) * folds,
        desc="cross-validating",
        disable=None if progress else True,
        leave=False,
    )
    scores = []
    for method in methods:
        work.set_postfix_str(method.name)
        pooled = np.empty_like(logits)
        fold_nll = []
        for train, held_out in splits:
            w_train, w_held = (
                (None, None) if weights is None else (weights[train], weights[held_out])
            )
            fitted = method.fit(logits[train], labels[train], w_train)
            pooled[held_out] = fitted.predict(logits[held_out])
            fold_nll.append(nll(pooled[held_out], labels[held_out], w_held))
            work.update()
        scores.append(_score(method.name, fold_nll, pooled, logits, labels, target, level, weights))
    work.close()
    if target is None:
        ranked = tuple(sorted(scores, key=lambda s: (bool(s.excluded), s.nll)))
    else:
        ranked = tuple(sorted(scores, key=lambda s: (bool(s.excluded), -s.automated, s.nll)))
    eligible = [s for s in ranked if not s.excluded] or list(ranked)
    runner_up = eligible[1].method if len(eligible) > 1 else None
    return Selection(eligible[0].method, runner_up, ranked, folds, seed)


def _score(
    name: str,
    fold_nll: list[float],
    pooled: Floats,
    logits: Floats,
    labels: Ints,
    target: float | None,
    level: float,
    weights: Floats | None,
) -> Score:
    predicted = pooled.argmax(axis=1)
    correct = predicted == labels
    changed = float(np.average(predicted != logits.argmax(axis=1), weights=weights))
    accuracy = float(np.average(correct, weights=weights))
    raw_accuracy = float(np.average(logits.argmax(axis=1) == labels, weights=weights))
    excluded = ""
    if changed > CLASS_CHANGE_LIMIT and accuracy < raw_accuracy:
        excluded = (
            f"changes the predicted class of {changed:.1%} of rows and loses accuracy out of"
            f" fold ({accuracy:.4f} against {raw_accuracy:.4f})"
        )
    found = (
        None
        if target is None
        else recommend_threshold(pooled.max(axis=1), correct, target, level, weights)
    )
    return Score(
        method=name,
        nll=float(np.mean(fold_nll)),
        nll_sd=float(np.std(fold_nll)),
        ece=ece(pooled, labels, weights=weights),
        automated=0.0 if found is None else found.automated_share,
        bound=None if found is None else found.accuracy_lower_bound,
        accuracy=accuracy,
        class_changed=changed,
        excluded=excluded,
    )
