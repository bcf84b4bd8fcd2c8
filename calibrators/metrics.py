"""Calibration metrics on numpy arrays; no I/O.

Top-label ECE uses 15 equal-width bins with the lower edge open, the definition of
Guo et al. (2017), so figures compare with the literature. Adaptive ECE uses 15
equal-mass bins (Nixon et al. 2019), MCE the largest equal-width bin gap, classwise
ECE the mean over classes of each class's own ECE (Kull et al. 2019). Brier is the
multi-class score: the mean over rows of sum_k (p_k - y_k)^2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

ECE_BINS = 15


def softmax(logits: npt.ArrayLike) -> Floats:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Floats = e / e.sum(axis=1, keepdims=True)
    return out


def unit_mean(weights: npt.ArrayLike) -> Floats:
    """Weights scaled to a mean of 1, so a weighted sum counts as many rows as there
    are and smoothing priors keep their meaning."""
    w = np.asarray(weights, dtype=np.float64)
    scaled: Floats = w * (w.shape[0] / w.sum())
    return scaled


def accuracy(probs: Floats, labels: Ints) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def nll(probs: Floats, labels: Ints, weights: Floats | None = None) -> float:
    """Mean negative log-likelihood (weighted by the rows' weights, when given);
    probabilities are clipped at machine epsilon, as scikit-learn's ``log_loss`` does,
    so one certain mistake does not make it infinite."""
    picked = probs[np.arange(labels.shape[0]), labels]
    losses = -np.log(np.clip(picked, np.finfo(np.float64).eps, 1.0))
    return float(np.average(losses, weights=weights))


def brier(probs: Floats, labels: Ints) -> float:
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class Bins:
    """Per-bin row count, mean confidence and accuracy (empty bins have count 0); with
    row weights, the means are weighted and ``mass`` holds each bin's summed weight."""

    edges: Floats
    count: Ints
    confidence: Floats
    accuracy: Floats
    mass: Floats | None = None

    def gaps(self) -> Floats:
        gap: Floats = np.abs(self.accuracy - self.confidence)
        return gap

    def weighted_gap(self) -> float:
        """The gaps averaged over the rows (their weights, when given)."""
        mass = self.count if self.mass is None else self.mass
        total = float(mass.sum())
        return float((mass * self.gaps()).sum() / total) if total else 0.0


def equal_width_bins(
    confidence: Floats, hit: npt.ArrayLike, bins: int = ECE_BINS, weights: Floats | None = None
) -> Bins:
    """Bins (e_i, e_i+1] over [0, 1]; a confidence of exactly 0 goes to the first."""
    edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float64)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    return _binned(edges, index, confidence, np.asarray(hit, dtype=np.float64), bins, weights)


def equal_mass_bins(confidence: Floats, hit: npt.ArrayLike, bins: int = ECE_BINS) -> Bins:
    """Bins holding equal numbers of rows (the first ones one more when uneven)."""
    order = np.argsort(confidence, kind="stable")
    chunks = np.array_split(order, bins)
    index = np.empty(confidence.shape[0], dtype=np.int64)
    for i, chunk in enumerate(chunks):
        index[chunk] = i
    upper = [confidence[c].max() if c.size else np.nan for c in chunks[:-1]]
    edges = np.concatenate([[0.0], upper, [1.0]])
    return _binned(edges, index, confidence, np.asarray(hit, dtype=np.float64), bins)


def _binned(
    edges: Floats,
    index: Ints,
    confidence: Floats,
    hit: Floats,
    bins: int,
    weights: Floats | None = None,
) -> Bins:
    count = np.bincount(index, minlength=bins)
    w = np.ones(confidence.shape[0]) if weights is None else weights
    mass: Floats = np.bincount(index, weights=w, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence * w, minlength=bins) / mass
        mean_hit = np.bincount(index, weights=hit * w, minlength=bins) / mass
    kept = None if weights is None else mass
    return Bins(edges, count, np.nan_to_num(mean_conf), np.nan_to_num(mean_hit), kept)


def top_label_bins(
    probs: Floats, labels: Ints, bins: int = ECE_BINS, weights: Floats | None = None
) -> Bins:
    hit = probs.argmax(axis=1) == labels
    return equal_width_bins(probs.max(axis=1), hit, bins, weights)


def ece(probs: Floats, labels: Ints, bins: int = ECE_BINS, weights: Floats | None = None) -> float:
    """Top-label expected calibration error with equal-width bins (each row counted
    with its weight, when given)."""
    return top_label_bins(probs, labels, bins, weights).weighted_gap()


def adaptive_ece(probs: Floats, labels: Ints, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-mass bins."""
    hit = probs.argmax(axis=1) == labels
    return equal_mass_bins(probs.max(axis=1), hit, bins).weighted_gap()


def mce(probs: Floats, labels: Ints, bins: int = ECE_BINS) -> float:
    """Largest gap between accuracy and confidence over non-empty equal-width bins."""
    b = top_label_bins(probs, labels, bins)
    return float(b.gaps()[b.count > 0].max())


def classwise_ece(probs: Floats, labels: Ints, bins: int = ECE_BINS) -> float:
    """Mean over classes k of the equal-width ECE of p_k against [y = k]."""
    return float(
        np.mean(
            [
                equal_width_bins(probs[:, k], labels == k, bins).weighted_gap()
                for k in range(probs.shape[1])
            ]
        )
    )


@dataclass(frozen=True)
class Metrics:
    rows: int
    accuracy: float
    ece: float
    adaptive_ece: float
    mce: float
    classwise_ece: float
    brier: float
    nll: float


def measure(probs: Floats, labels: Ints, bins: int = ECE_BINS) -> Metrics:
    """Every metric, the binned ones with bins bins."""
    return Metrics(
        rows=int(labels.shape[0]),
        accuracy=accuracy(probs, labels),
        ece=ece(probs, labels, bins),
        adaptive_ece=adaptive_ece(probs, labels, bins),
        mce=mce(probs, labels, bins),
        classwise_ece=classwise_ece(probs, labels, bins),
        brier=brier(probs, labels),
        nll=nll(probs, labels),
    )


def by_segment(
    probs: Floats, labels: Ints, segments: npt.NDArray[np.str_], bins: int = ECE_BINS
) -> dict[str, Metrics]:
    """Metrics per segment (domain or group): a calibrator or threshold that is fine
    on aggregate can be off for one group."""
    return {
        name: measure(probs[segments == name], labels[segments == name], bins)
        for name in sorted(set(segments.tolist()))
    }


def confidence_histogram(
    probs: Floats, bins: int = 20, weights: Floats | None = None
) -> tuple[list[float], list[int]]:
    """Edges and counts of top-label confidence: the reference for drift monitoring.
    With row weights, each row counts its weight scaled to a mean of 1 (the counts
    still sum to about the rows), rounded: what the rows stand for."""
    w = None if weights is None else unit_mean(weights)
    counts, edges = np.histogram(probs.max(axis=1), bins=bins, range=(0.0, 1.0), weights=w)
    return [float(e) for e in edges], [round(float(c)) for c in counts]


def class_counts(probs: Floats, weights: Floats | None = None) -> list[int]:
    """Rows per predicted class (weighted as ``confidence_histogram``): the reference
    for the predicted classes' drift."""
    w = None if weights is None else unit_mean(weights)
    counted = np.bincount(probs.argmax(axis=1), weights=w, minlength=probs.shape[1])
    return [round(float(c)) for c in counted]
