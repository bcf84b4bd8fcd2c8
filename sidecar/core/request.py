"""What the core decides on: a routed prediction, as the caller sent it."""

from __future__ import annotations

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
