"""Label shift: production's class mix differs from the labelled rows' (a long-tailed
validation set, a balanced or drifting production). Under label shift (p(x | y) the
same, p(y) not), a statement about production's Tier-1 accuracy is a statement about
the labelled rows reweighted by class, w_y = pi_production(y) / pi_labelled(y).

Production's priors are estimated from its unlabelled outputs by the EM re-estimation
of Saerens, Latinne and Decaestecker (2002, "Adjusting the outputs of a classifier to
new a priori probabilities", Neural Computation 14): alternate between re-weighting
the calibrated posteriors by the current prior ratio and re-estimating the priors as
their mean. It needs posteriors calibrated for the labelled priors, which is what
the calibrators give. Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

# Weights beyond this, or an effective sample under this share of the rows, mean the
# shift is too large for the labelled rows to say anything reliable about production.
MAX_WEIGHT = 20.0
MIN_EFFECTIVE_SHARE = 0.1


@dataclass(frozen=True)
class Shift:
    labelled_priors: tuple[float, ...]
    production_priors: tuple[float, ...]
    total_variation: float  # half the L1 distance between the two mixes
    max_weight: float
    effective_rows: float  # Kish's (sum w)^2 / sum w^2 over the labelled rows
    production_rows: int


def estimate_priors(
    posteriors: Floats,
    labelled_priors: Floats,
    iterations: int = 1000,
    tolerance: float = 1e-9,
    weights: Floats | None = None,
) -> Floats:
    """Production's class priors from its calibrated posteriors (rows of p(y | x) under
    labelled_priors), by Saerens et al.'s EM. A class the labelled rows lack keeps a
    small floor, so its ratio cannot run away. weights: how many production rows each
    row stands for (a sampled log's inverse inclusion probabilities; None: one each)."""
    floor = 0.1 / posteriors.shape[1] / max(1, posteriors.shape[0])
    base = np.clip(np.asarray(labelled_priors, dtype=np.float64), floor, None)
    priors = base.copy()
    for _ in range(iterations):
        adjusted = posteriors * (priors / base)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        updated = np.average(adjusted, axis=0, weights=weights)
        if np.abs(updated - priors).max() < tolerance:
            priors = updated
            break
        priors = updated
    estimated: Floats = priors / priors.sum()
    return estimated


def class_weights(
    labels: npt.NDArray[np.int64], production_priors: Floats, row_weights: Floats | None = None
) -> Floats:
    """Each labelled row's weight: its class's production prior over its labelled one
    (the labelled mix counted with the rows' own weights, when given, so that the
    product of the two weights has production's mix)."""
    classes = production_priors.shape[0]
    labelled = _mix(labels, classes, row_weights)
    ratio = np.divide(production_priors, labelled, out=np.zeros(classes), where=labelled > 0)
    weights: Floats = ratio[labels]
    return weights


def reweighted(row_weights: Floats | None, class_weights: Floats | None) -> Floats | None:
    """The labelled rows' weights for production's mix: each row's own weight times its
    class's (``class_weights``; None when no shift was estimated); None: neither."""
    if class_weights is None:
        return row_weights
    return class_weights if row_weights is None else row_weights * class_weights


def _mix(labels: npt.NDArray[np.int64], classes: int, weights: Floats | None) -> Floats:
    counted = np.bincount(labels, weights=weights, minlength=classes)
    mix: Floats = counted / counted.sum()
    return mix


def describe(
    labels: npt.NDArray[np.int64],
    production_priors: Floats,
    production_rows: int,
    row_weights: Floats | None = None,
) -> tuple[Shift, Floats]:
    """The shift's summary and the labelled rows' class weights (row_weights: the
    rows' own, as ``class_weights`` takes them)."""
    labelled = _mix(labels, production_priors.shape[0], row_weights)
    weights = class_weights(labels, production_priors, row_weights)
    combined = weights if row_weights is None else weights * row_weights
    effective = float(combined.sum() ** 2 / np.square(combined).sum())
    shift = Shift(
        labelled_priors=tuple(round(float(p), 6) for p in labelled),
        production_priors=tuple(round(float(p), 6) for p in production_priors),
        total_variation=float(0.5 * np.abs(production_priors - labelled).sum()),
        max_weight=float(weights.max()),
        effective_rows=effective,
        production_rows=production_rows,
    )
    return shift, weights


def shift_to(
    labels: npt.NDArray[np.int64],
    row_weights: Floats | None,
    posteriors: Floats,
    production_weights: Floats | None = None,
) -> tuple[Shift, Floats]:
    """``describe`` for the production mix estimated (``estimate_priors``) from its
    calibrated posteriors, each production row counted with its weight."""
    labelled = _mix(labels, posteriors.shape[1], row_weights)
    priors = estimate_priors(posteriors, labelled, weights=production_weights)
    return describe(labels, priors, posteriors.shape[0], row_weights)


def too_uncertain(shift: Shift, rows: int) -> str:
    """Why the labelled rows cannot speak for production under this shift ('' if they
    can): a class production has but the labelled rows lack, or weights so uneven that
    the effective sample is a small share of the rows."""
    missing = [
        c
        for c, (lab, prod) in enumerate(
            zip(shift.labelled_priors, shift.production_priors, strict=True)
        )
        if lab == 0 and prod > 0.001
    ]
    if missing:
        return f"production has classes {missing} that no labelled row has"
    if shift.max_weight > MAX_WEIGHT:
        return (
            f"a class is {shift.max_weight:.1f} times as common in production as in the"
            f" labelled rows (at most {MAX_WEIGHT:g} can be bounded)"
        )
    if shift.effective_rows < MIN_EFFECTIVE_SHARE * rows:
        return (
            f"reweighted, the {rows} labelled rows count as {shift.effective_rows:.0f}"
            f" (under {MIN_EFFECTIVE_SHARE:.0%})"
        )
    return ""
