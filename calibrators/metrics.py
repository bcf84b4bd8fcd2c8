"""Calibration metrics on numpy arrays. Top-label ECE uses 15 equal-width bins, the
definition of Guo et al. (2017), so figures compare with the literature."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

ECE_BINS = 15


def softmax(logits: npt.ArrayLike) -> Floats:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Floats = e / e.sum(axis=1, keepdims=True)
    return out


def accuracy(probs: Floats, labels: Ints) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def nll(probs: Floats, labels: Ints) -> float:
    picked = probs[np.arange(labels.shape[0]), labels]
    return float(-np.log(np.clip(picked, 1e-300, 1.0)).mean())


def ece(probs: Floats, labels: Ints, bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error with equal-width bins (lower edge open)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            total += in_bin.mean() * gap
    return float(total)


def confidence_histogram(probs: Floats, bins: int = 20) -> tuple[list[float], list[int]]:
    """Edges and counts of top-label confidence: the reference for drift monitoring."""
    counts, edges = np.histogram(probs.max(axis=1), bins=bins, range=(0.0, 1.0))
    return [float(e) for e in edges], [int(c) for c in counts]
