"""Threshold recommendation per model and per domain, and its policy fragment."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import binomtest

from calibrators.thresholds import (
    ThresholdError,
    clopper_pearson_lower,
    first_tested,
    recommend_threshold,
    recommend_thresholds,
    rows_needed,
)
from sidecar.core.policy import parse_policy


def calibrated(rows: int, low: float, seed: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Perfectly calibrated confidences uniform on [low, 1]."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(low, 1.0, rows)
    return confidence, rng.uniform(size=rows) < confidence


def test_first_tested_is_between_the_floor_and_half_the_rows() -> None:
    """The walk starts where errors at half the target's rate can pass, never
    below the flawless-record floor, never past half the rows."""
    assert rows_needed(0.99, 0.95) == 598
    assert first_tested(0.99, 0.95, 10_000) == 773
    assert first_tested(0.99, 0.95, 1000) == 598
    assert first_tested(0.99, 0.95, 1400) == 700


def test_per_domain_thresholds_and_default_fallback() -> None:
    """A well-behaved domain gets its own thresholds; one too small for the bound
    falls back to the model default with a warning; t_low <= t_high throughout."""
    conf_a, ok_a = calibrated(6000, 0.5, 1)
    conf_b, ok_b = calibrated(4000, 0.8, 2)
    conf_c, ok_c = calibrated(50, 0.5, 3)
    confidence = np.concatenate([conf_a, conf_b, conf_c])
    correct = np.concatenate([ok_a, ok_b, ok_c])
    domains = np.array(["a"] * 6000 + ["b"] * 4000 + ["c"] * 50)
    report = recommend_thresholds(confidence, correct, 0.95, 0.75, 0.95, domains)
    assert not report.domains["a"].uses_default
    assert not report.domains["b"].uses_default
    assert report.domains["c"].uses_default
    assert report.domains["c"].t_high == report.default.t_high
    assert report.warnings == (
        "domain 'c': 50 rows; bounding accuracy at 0.95 with 95% confidence needs at least "
        "118; the model default applies",
    )
    for s in (report.default, *report.domains.values()):
        assert s.t_low <= s.t_high
        assert s.tier1_lower_bound >= 0.95 or s.uses_default
        assert s.automated_share + s.assisted_share + s.primary_share == pytest.approx(1.0)
    # True accuracy above t on U(low, 1) is (1 + t) / 2: each own threshold meets 0.95.
    assert (1 + report.domains["a"].t_high) / 2 >= 0.95


def test_fragment_is_a_policy_the_sidecar_accepts() -> None:
    """The fragment, with a calibrator entry added, parses as a policy."""
    confidence, correct = calibrated(5000, 0.5, 4)
    domains = np.where(np.arange(5000) % 2 == 0, "eu", "us")
    fragment = recommend_thresholds(confidence, correct, 0.95, 0.8, 0.95, domains).policy_fragment(
        "fraud"
    )
    fragment["models"]["fraud"]["calibrator"] = {
        "path": "c.onnx",
        "sha256": "a" * 64,
        "version": "v1",
    }
    policy = parse_policy({"revision": 3, **fragment})
    table = policy.models["fraud"].thresholds
    assert table.default.t_high == fragment["models"]["fraud"]["thresholds"]["t_high"]
    assert table.for_domain("eu").t_high == fragment["models"]["fraud"]["domains"]["eu"]["t_high"]


def test_unreachable_target_and_bad_targets_raise() -> None:
    """No defensible threshold, too few rows, or targets out of order: ThresholdError."""
    confidence, correct = calibrated(3000, 0.3, 5)
    correct[np.argsort(-confidence)[:50:5]] = False  # errors among the most confident
    with pytest.raises(ThresholdError, match="no threshold bounds"):
        recommend_thresholds(confidence, correct, 0.995, 0.8)
    with pytest.raises(ThresholdError, match="needs at least 598"):
        recommend_thresholds(confidence[:100], correct[:100], 0.99, 0.8)
    with pytest.raises(ThresholdError, match="low target"):
        recommend_thresholds(confidence, correct, 0.8, 0.9)


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
