"""Calibration metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from calibrators.metrics import (
    adaptive_ece,
    brier,
    by_segment,
    classwise_ece,
    ece,
    equal_width_bins,
    mce,
    measure,
    nll,
    softmax,
)
from tests.calibration_data import synthetic

HAND = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
HAND_LABELS = np.array([0, 0, 1, 1])


def test_ece_of_a_hand_computed_case() -> None:
    """Two bins: |1.0 - 0.9| * 0.5 + |0.0 - 0.6| * 0.5 = 0.35; MCE is the larger gap."""
    assert ece(HAND, HAND_LABELS) == pytest.approx(0.35)
    assert mce(HAND, HAND_LABELS) == pytest.approx(0.6)


def test_adaptive_ece_of_a_hand_computed_case() -> None:
    """Two equal-mass bins of two rows each give the same gaps as above."""
    assert adaptive_ece(HAND, HAND_LABELS, bins=2) == pytest.approx(0.35)


def test_bins_agree_with_scikit_learn_calibration_curve() -> None:
    """Per-bin accuracy and confidence equal calibration_curve's on one class's
    probabilities (uniform strategy), for the non-empty bins."""
    data = synthetic(1.5)
    p = softmax(data.logits)[:, 0]
    hit = data.labels == 0
    prob_true, prob_pred = calibration_curve(hit, p, n_bins=15, strategy="uniform")
    bins = equal_width_bins(p, hit, 15)
    filled = bins.count > 0
    np.testing.assert_allclose(bins.accuracy[filled], prob_true, atol=1e-12)
    np.testing.assert_allclose(bins.confidence[filled], prob_pred, atol=1e-12)


def test_brier_and_nll_match_scikit_learn() -> None:
    """Multi-class Brier (unscaled) and NLL equal scikit-learn's."""
    data = synthetic(1.5)
    p = softmax(data.logits)
    classes = list(range(p.shape[1]))
    assert brier(p, data.labels) == pytest.approx(
        brier_score_loss(data.labels, p, labels=classes, scale_by_half=False)
    )
    assert nll(p, data.labels) == pytest.approx(log_loss(data.labels, p, labels=classes))


def test_classwise_ece_is_the_mean_of_per_class_ece() -> None:
    """Classwise ECE averages each class's binned gap between p_k and [y = k]."""
    data = synthetic(1.5, classes=3)
    p = softmax(data.logits)
    per_class = []
    for k in range(3):
        edges = np.linspace(0, 1, 16)
        total = 0.0
        for i in range(15):
            rows = (p[:, k] > edges[i]) & (p[:, k] <= edges[i + 1])
            if rows.any():
                total += rows.mean() * abs((data.labels[rows] == k).mean() - p[rows, k].mean())
        per_class.append(total)
    assert classwise_ece(p, data.labels) == pytest.approx(np.mean(per_class))


def test_metrics_by_segment() -> None:
    """Each segment's metrics are those of its rows alone."""
    data = synthetic(1.5)
    p = softmax(data.logits)
    segments = np.where(np.arange(data.rows) % 3 == 0, "eu", "us")
    parts = by_segment(p, data.labels, segments)
    assert set(parts) == {"eu", "us"}
    eu = segments == "eu"
    assert parts["eu"] == measure(p[eu], data.labels[eu])
    assert parts["eu"].rows + parts["us"].rows == data.rows
