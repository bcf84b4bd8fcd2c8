"""Label shift: production's priors estimated from unlabelled outputs, and thresholds
bounded for production's class mix. The data: three classes with Gaussian inputs,
whose exact posteriors under the labelled priors are the model's calibrated output,
so what production gets above a threshold can be computed on a large sample."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from calibrators.shift import class_weights, describe, estimate_priors, too_uncertain
from calibrators.thresholds import recommend_threshold

MEANS = np.array([[1.6, 0.0], [0.0, 1.6], [-1.2, -1.2]])
LABELLED = np.array([0.7, 0.2, 0.1])  # a long-tailed labelled set
PRODUCTION = np.array([1 / 3, 1 / 3, 1 / 3])  # a balanced production


def sample(
    rows: int, priors: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Rows drawn with priors; each row's posterior under the LABELLED priors (what a
    calibrator fitted on the labelled set outputs), and its class."""
    labels = rng.choice(3, size=rows, p=priors)
    x = MEANS[labels] + rng.standard_normal((rows, 2))
    logits = np.log(LABELLED) + x @ MEANS.T - 0.5 * np.square(MEANS).sum(axis=1)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True), labels


def test_em_recovers_production_priors() -> None:
    """From 20,000 unlabelled production rows, the priors within 0.02."""
    rng = np.random.default_rng(0)
    posteriors, _ = sample(20_000, PRODUCTION, rng)
    assert np.abs(estimate_priors(posteriors, LABELLED) - PRODUCTION).max() < 0.02


def test_the_weighted_bound_keeps_its_level_under_label_shift() -> None:
    """Over 300 seeded draws of 4,000 long-tailed labelled rows, the threshold bounded
    for production's mix (weights from its true priors) gets production a Tier-1
    accuracy below the 0.95 target in at most 5 % of the draws, the level's promise;
    unweighted, the same rows miss in nearly every draw."""
    target, level = 0.95, 0.95
    rng = np.random.default_rng(1)
    prod_probs, prod_labels = sample(400_000, PRODUCTION, rng)
    conf = prod_probs.max(axis=1)
    ok = prod_probs.argmax(axis=1) == prod_labels
    order = np.argsort(-conf)
    sorted_conf, hits = conf[order], np.cumsum(ok[order])

    def production_accuracy(threshold: float) -> float:
        n = int(np.searchsorted(-sorted_conf, -threshold, side="right"))
        return float(hits[n - 1] / n)

    misses = {"weighted": 0, "unweighted": 0}
    draws = 300
    for _ in range(draws):
        probs, labels = sample(4000, LABELLED, rng)
        c, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        weights = class_weights(labels, PRODUCTION)
        for name, w in (("weighted", weights), ("unweighted", None)):
            found = recommend_threshold(c, correct, target, level, w)
            if found is not None and production_accuracy(found.threshold) < target:
                misses[name] += 1
    assert misses["weighted"] <= draws * (1 - level), misses
    assert misses["unweighted"] > draws / 2, misses


def test_a_shift_too_large_is_refused() -> None:
    """Production with a class the labelled rows lack, or weights so uneven the rows
    count for little, cannot be bounded; a moderate shift can."""
    labels = np.array([0] * 990 + [1] * 10)
    moderate, _ = describe(labels, np.array([0.9, 0.1]), 500)
    assert too_uncertain(moderate, labels.shape[0]) == ""
    extreme, _ = describe(labels, np.array([0.3, 0.7]), 500)
    assert "times as common in production" in too_uncertain(extreme, labels.shape[0])
    missing, _ = describe(np.zeros(100, dtype=np.int64), np.array([0.5, 0.5]), 500)
    assert "no labelled row has" in too_uncertain(missing, 100)


@pytest.mark.parametrize("rows", [4000])
def test_weights_are_the_prior_ratio(rows: int) -> None:
    labels = np.random.default_rng(2).choice(3, size=rows, p=LABELLED)
    weights = class_weights(labels, PRODUCTION)
    labelled = np.bincount(labels, minlength=3) / rows
    assert weights[labels == 2][0] == pytest.approx(PRODUCTION[2] / labelled[2])
    assert float(weights.mean()) == pytest.approx(1.0)


def test_with_row_weights_the_product_has_productions_mix() -> None:
    """Rows that carry weights of their own (a sampled dataset's): the class weights
    are taken against the weighted labelled mix, so that the two weights together give
    production's mix, and the effective rows count both."""
    labels = np.array([0, 0, 0, 1, 1, 2])
    rows = np.array([1.0, 1.0, 1.0, 4.0, 4.0, 2.0])
    production = np.array([0.2, 0.3, 0.5])
    shift, weights = describe(labels, production, 100, rows)
    mix = np.bincount(labels, weights=weights * rows, minlength=3)
    assert (mix / mix.sum()).tolist() == pytest.approx(production.tolist())
    assert shift.labelled_priors == pytest.approx((3 / 13, 8 / 13, 2 / 13), abs=1e-6)
    combined = weights * rows
    assert shift.effective_rows == pytest.approx(combined.sum() ** 2 / (combined**2).sum())


def test_em_counts_each_production_row_with_its_weight() -> None:
    """A row standing for 3 weighs as 3 copies of it."""
    posteriors = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    copies = np.repeat(posteriors, [3, 1, 1], axis=0)
    weighted = estimate_priors(posteriors, np.array([0.5, 0.5]), weights=np.array([3.0, 1, 1]))
    assert weighted.tolist() == pytest.approx(
        estimate_priors(copies, np.array([0.5, 0.5])).tolist()
    )
