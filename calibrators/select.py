"""Pick a calibration method by cross-validated NLL on the fitting data.

Each candidate is fitted on k - 1 folds and scored on the held-out fold; the one with
the lowest mean held-out NLL wins, and the runner-up is reported beside it, so a
reviewer sees how close the call was. Folds are shuffled with a fixed seed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold
from tqdm import tqdm

from calibrators.methods import Method, applicable
from calibrators.metrics import Floats, Ints, ece, nll

FOLDS = 5


@dataclass(frozen=True)
class Score:
    method: str
    nll: float
    nll_sd: float
    ece: float  # of the pooled out-of-fold predictions


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
) -> Selection:
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
            fitted = method.fit(logits[train], labels[train])
            pooled[held_out] = fitted.predict(logits[held_out])
            fold_nll.append(nll(pooled[held_out], labels[held_out]))
            work.update()
        scores.append(
            Score(
                method.name, float(np.mean(fold_nll)), float(np.std(fold_nll)), ece(pooled, labels)
            )
        )
    work.close()
    ranked = tuple(sorted(scores, key=lambda s: s.nll))
    runner_up = ranked[1].method if len(ranked) > 1 else None
    return Selection(ranked[0].method, runner_up, ranked, folds, seed)
