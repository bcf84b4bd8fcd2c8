"""What the core decides on: a routed prediction and the calibrated signals of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class InputKind(IntEnum):
    """Mirrors hitl.v1.InputKind (values equal the proto numbers); UNSPECIFIED is LOGITS."""

    UNSPECIFIED = 0
    LOGITS = 1
    PROBABILITIES = 2


@dataclass(frozen=True, slots=True, eq=False)
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

    def fingerprint(self) -> tuple[str, bytes]:
        """What makes two sends of one request_id the same prediction."""
        return self.model, self.logits.tobytes()


@dataclass(frozen=True, slots=True)
class Signals:
    """The calibrated output for one prediction, as rules and thresholds see it."""

    predicted_class: int
    confidence: float
    margin: float
    entropy: float


def signals_of(probabilities: FloatArray) -> list[Signals | None]:
    """Signals for each row of an [N, C] probability matrix; None for a row that
    holds NaN or infinity (the non-finite fallback)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    finite = np.all(np.isfinite(probs), axis=1).tolist()
    safe = np.where(np.isfinite(probs), probs, 0.0)
    classes = safe.argmax(axis=1)
    if probs.shape[1] > 1:
        top2 = np.partition(safe, probs.shape[1] - 2, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
    else:
        margins = safe[:, 0]
    clipped = np.clip(safe, 1e-300, 1.0)
    entropies = -(safe * np.log(clipped)).sum(axis=1)
    out: list[Signals | None] = []
    for i in range(probs.shape[0]):
        if not finite[i]:
            out.append(None)
            continue
        cls = int(classes[i])
        out.append(Signals(cls, float(safe[i, cls]), float(margins[i]), float(entropies[i])))
    return out
