"""What the core decides on: a routed prediction and the calibrated signals of it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from sidecar.core.values import value

FloatArray = npt.NDArray[np.float32]


class InputKind(IntEnum):
    """Mirrors hitl.v1.InputKind (values equal the proto numbers); UNSPECIFIED is LOGITS."""

    UNSPECIFIED = 0
    LOGITS = 1
    PROBABILITIES = 2


@value(eq=False)
class RouteInput:
    """One prediction to route, as the caller sent it."""

    request_id: str
    model: str
    logits: FloatArray
    model_version: str = ""
    input_kind: int = InputKind.LOGITS  # a raw proto value until validated
    domain: str = ""
    string_attributes: Mapping[str, str] | None = None
    numeric_attributes: Mapping[str, float] | None = None
    input_ref: str = ""
    context: Mapping[str, str] | None = None

    def fingerprint(self) -> int:
        """The logits as sent, hashed to 64 bits: with the model, what makes two sends
        of one request_id the same prediction. Its size does not grow with the class
        count, and two different predictions share one with odds of 2**-64."""
        return hash(self.logits.tobytes())


@value
class Signals:
    """The calibrated output for one prediction, as rules and thresholds see it."""

    predicted_class: int
    confidence: float
    margin: float
    entropy: float


def signals_of(probabilities: FloatArray) -> list[Signals | None]:
    """Signals for each row of an [N, C] probability matrix; None for a row that
    holds NaN or infinity (the non-finite fallback).

    Plain Python per row: for the tens of classes a calibrator has, a handful of
    numpy calls per row costs more in call overhead than the arithmetic itself."""
    return [_signals(row) for row in probabilities.tolist()]


def _signals(row: list[float]) -> Signals | None:
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
    return Signals(cls, top, top - max(second, 0.0), entropy)
