"""Every method on one dataset, fitted on a seeded half and judged on the other.

For each method: ECE, NLL and Brier on the held-out half before and after, the
``t_high`` recommended on the fitting half, and the Tier-1 accuracy that threshold
actually delivers on the held-out half next to its target. The auto-selection runs
on the fitting half too, so the report shows which method it would pick."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from calibrators.data import Dataset
from calibrators.fit import cross_fitted
from calibrators.methods import Method, applicable
from calibrators.metrics import Metrics, measure, softmax
from calibrators.select import FOLDS, Selection, select_method
from calibrators.thresholds import ThresholdError, recommend_thresholds


@dataclass(frozen=True)
class MethodResult:
    method: str
    after: Metrics
    fit_seconds: float
    t_high: float | None  # None: no threshold met the target on the fitting half
    automated_share: float  # on the held-out half
    tier1_accuracy: float | None  # achieved on the held-out half; None if none automated


@dataclass(frozen=True)
class Comparison:
    source: str
    seed: int
    fit_rows: int
    held_out_rows: int
    target: float
    level: float
    before: Metrics
    results: tuple[MethodResult, ...]
    selection: Selection

    def table(self) -> str:
        """A Markdown table, one row per method; the auto-selected one is starred."""
        head = (
            f"{self.source}: fit on {self.fit_rows} rows, held out {self.held_out_rows} "
            f"(seed {self.seed}); raw ECE {self.before.ece:.2%}, NLL {self.before.nll:.3f}; "
            f"Tier-1 target {self.target} at {self.level:.0%} confidence\n\n"
            "| method | ECE | adaptive ECE | NLL | Brier | t_high | automated | Tier-1 accuracy |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        rows = []
        for r in self.results:
            star = " (auto)" if r.method == self.selection.chosen else ""
            threshold = "none" if r.t_high is None else f"{r.t_high:.4f}"
            achieved = "-" if r.tier1_accuracy is None else f"{r.tier1_accuracy:.4f}"
            rows.append(
                f"| {r.method}{star} | {r.after.ece:.2%} | {r.after.adaptive_ece:.2%} | "
                f"{r.after.nll:.3f} | {r.after.brier:.4f} | {threshold} | "
                f"{r.automated_share:.1%} | {achieved} |"
            )
        return head + "\n".join(rows) + "\n"


def compare_methods(
    data: Dataset,
    methods: list[Method] | None = None,
    seed: int = 0,
    target: float = 0.99,
    level: float = 0.95,
    progress: bool = False,
    test: Dataset | None = None,
) -> Comparison:
    """Every method fitted on one part and judged on another: a seeded half / half
    split of data, or all of data against a separate labelled test set. t_high is
    bounded on cross-fitted confidences of the fitting part, never on the rows each
    calibrator was fitted on."""
    if test is None:
        order = np.random.default_rng(seed).permutation(data.rows)
        half = data.rows // 2
        fit, held = data.take(order[:half]), data.take(order[half:])
    else:
        fit, held = data, test
    candidates = methods if methods is not None else applicable(data.classes)
    selection = select_method(fit.logits, fit.labels, candidates, seed=seed, progress=progress)
    results = []
    for method in tqdm(candidates, desc="methods", disable=None if progress else True, leave=False):
        started = time.perf_counter()
        fitted = method.fit(fit.logits, fit.labels)
        seconds = time.perf_counter() - started
        fit_probs = cross_fitted(fit, method.name, FOLDS, seed)
        held_probs = fitted.predict(held.logits)
        results.append(
            _judge(method.name, fit_probs, fit, held_probs, held, target, level, seconds)
        )
    return Comparison(
        source=data.source,
        seed=seed,
        fit_rows=fit.rows,
        held_out_rows=held.rows,
        target=target,
        level=level,
        before=measure(softmax(held.logits), held.labels),
        results=tuple(results),
        selection=selection,
    )


def _judge(
    name: str,
    fit_probs: np.ndarray[Any, Any],
    fit: Dataset,
    held_probs: np.ndarray[Any, Any],
    held: Dataset,
    target: float,
    level: float,
    seconds: float,
) -> MethodResult:
    correct = fit_probs.argmax(axis=1) == fit.labels
    try:
        # Only t_high is judged here, so t_low's target is t_high's.
        report = recommend_thresholds(fit_probs.max(axis=1), correct, target, target, level)
        t_high: float | None = report.default.t_high
    except ThresholdError:
        t_high = None
    automated = held_probs.max(axis=1) >= (t_high if t_high is not None else np.inf)
    hits = held_probs.argmax(axis=1)[automated] == held.labels[automated]
    return MethodResult(
        method=name,
        after=measure(held_probs, held.labels),
        fit_seconds=seconds,
        t_high=t_high,
        automated_share=float(automated.mean()),
        tier1_accuracy=float(hits.mean()) if hits.size else None,
    )
