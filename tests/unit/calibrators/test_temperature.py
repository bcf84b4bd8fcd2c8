"""Temperature scaling, ECE and the Clopper-Pearson threshold, against references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from calibrators.methods.temperature import TemperatureScaling, fit_temperature
from calibrators.metrics import ece, nll, softmax
from calibrators.thresholds import clopper_pearson_lower, recommend_threshold


def synthetic(
    temperature: float, n: int = 20_000, classes: int = 5, seed: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature): T is the truth."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, classes))
    probs = softmax(logits / temperature)
    labels = np.array([rng.choice(classes, p=p) for p in probs], dtype=np.int64)
    return logits, labels


def test_fit_recovers_the_true_temperature() -> None:
    """On data generated at T=2, the fitted T is within 5% of 2."""
    logits, labels = synthetic(2.0)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_fit_lowers_nll_and_ece() -> None:
    """Scaling by the fitted T lowers NLL and ECE on over-confident logits."""
    logits, labels = synthetic(2.5)
    t = fit_temperature(logits, labels)
    before, after = softmax(logits), TemperatureScaling(t, logits.shape[1]).predict(logits)
    assert nll(after, labels) < nll(before, labels)
    assert ece(after, labels) < 0.02 < ece(before, labels)


def test_ece_of_a_hand_computed_case() -> None:
    """Two bins: |1.0 - 0.9| * 0.5 + |0.0 - 0.6| * 0.5 = 0.35."""
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    assert ece(probs, labels) == pytest.approx(0.35)


@pytest.mark.parametrize(("k", "n"), [(95, 100), (1000, 1000), (1, 10), (480, 500)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    """The one-sided 95% bound equals the lower end of scipy's exact two-sided 90% interval."""
    reference = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
    assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(reference, abs=1e-9)


def test_threshold_bound_covers_on_calibrated_data() -> None:
    """On perfectly calibrated synthetic data, a recommended threshold's true accuracy is
    below the target in at most 5% of 400 independent draws, and one is usually found."""
    rng = np.random.default_rng(11)
    target, misses, none, trials = 0.90, 0, 0, 400
    for _ in range(trials):
        confidence = rng.uniform(0.5, 1.0, 2000)
        correct = rng.uniform(size=2000) < confidence
        rec = recommend_threshold(confidence, correct, target, 0.95)
        if rec is None:
            none += 1
            continue
        true_accuracy = (1.0 + rec.threshold) / 2.0  # mean of U(t, 1), the true accuracy above t
        misses += true_accuracy < target
    assert misses / trials <= 0.05
    assert none / trials <= 0.10  # power, not validity: the first test failed (no claim made)


def test_no_threshold_when_target_unreachable() -> None:
    """When no automated set can meet the target with confidence, there is no threshold."""
    assert recommend_threshold([0.9, 0.8, 0.7], [True, False, True], 0.99) is None
