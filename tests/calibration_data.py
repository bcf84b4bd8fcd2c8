"""Labelled model outputs for calibrator tests: synthetic with known calibration,
and the real classifier outputs in ../shared/data/calibration when present."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.calibration_report import REFERENCE_ECE, SHARED
from calibrators.data import Dataset, check, load_dataset
from calibrators.metrics import softmax

REAL_FILES = sorted(REFERENCE_ECE)


def synthetic(
    temperature: float = 2.0,
    rows: int = 4000,
    classes: int = 5,
    seed: int = 3,
    spread: float = 3.0,
) -> Dataset:
    """Logits (normal, sd spread) whose labels are drawn from softmax(logits /
    temperature): over-confident by exactly that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, spread, size=(rows, classes))
    probs = softmax(logits / temperature)
    u = rng.uniform(size=(rows, 1))
    labels = (probs.cumsum(axis=1) < u).sum(axis=1).clip(0, classes - 1)
    return check("synthetic", logits, labels, None, probabilities=False)


def real(name: str) -> Dataset:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return load_dataset(path)
