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
        """Everything besides the model that can change this request's decision, hashed
        to 64 bits: model_version, input kind, domain, logits and every attribute (not
        the context or input_ref, which no decision reads). Two sends of one
        request_id are the same prediction when model and fingerprint agree; -0.0
        and 0.0 count as one value, and two different predictions share a
        fingerprint with odds of 2**-64 (the replay window keeps the 64 bits, whatever
        the class count)."""
        return hash(
            (
                self.model_version,
                int(self.input_kind) or int(InputKind.LOGITS),  # UNSPECIFIED is LOGITS
                self.domain,
                tuple(self.logits.tolist()),  # floats hash by value: -0.0 as 0.0
                frozenset(self.string_attributes.items()) if self.string_attributes else None,
                frozenset(self.numeric_attributes.items()) if self.numeric_attributes else None,
            )
        )
