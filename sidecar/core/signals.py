"""Calibrated signals: what rules and thresholds see of a calibrated prediction.

One arithmetic for every path, so a request gets the same signals in a batch as
alone: plain Python per row. For the tens of classes a calibrator has, numpy costs
more in call overhead than the arithmetic itself (a one-row matrix took six times
as long through a dozen numpy calls), and a batch's rows are read in one
``tolist``. Pure."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sidecar.core.values import value

FloatArray = npt.NDArray[np.float32]
SignalRow = tuple[int, float, float, float]  # class, confidence, margin, entropy


@value
class Signals:
    """The calibrated output for one prediction, as rules and thresholds see it."""

    predicted_class: int
    confidence: float
    margin: float
    entropy: float


def signals_of(probabilities: FloatArray) -> list[Signals | None]:
    """Signals for each row of an [N, C] probability matrix; None for a row that
    holds NaN or infinity (the non-finite fallback)."""
    return [None if row is None else Signals(*row) for row in signal_rows(probabilities)]


def signal_rows(probabilities: FloatArray) -> list[SignalRow | None]:
    """``signals_of`` as plain tuples, for the batch path's columns."""
    return [_signals(row) for row in probabilities.tolist()]


def _signals(row: list[float]) -> SignalRow | None:
    top = second = -1.0
    cls = 0
    entropy = 0.0
    for i, p in enumerate(row):
        if not math.isfinite(p):
            return None
        if p > top:
            top, second, cls = p, top, i
        elif p > second:
            second = p
        if p > 0.0:
            entropy -= p * math.log(p)
    return cls, top, top - max(second, 0.0), entropy
