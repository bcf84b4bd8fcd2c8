"""Temperature scaling (Guo et al. 2017): softmax(logits / T), one parameter fitted
by minimising the negative log-likelihood. It never changes the predicted class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from calibrators.methods.base import Graph, Method, as_logits, row_weights
from calibrators.metrics import Floats, Ints, softmax
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME

# T is searched on a log scale within these bounds; real networks land near 1-3.
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


@dataclass(frozen=True, eq=False)
class TemperatureScaling:
    method: ClassVar[str] = "temperature"
    temperature: float
    classes: int

    @property
    def class_count(self) -> int:
        return self.classes

    def predict(self, logits: npt.ArrayLike) -> Floats:
        return softmax(as_logits(logits) / self.temperature)

    def graph(self) -> Graph:
        g = Graph()
        t = g.const("temperature", self.temperature, np.float32)
        g.node("Softmax", [g.node("Div", [INPUT_NAME, t], "scaled")], OUTPUT_NAME, axis=1)
        return g

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "classes": self.classes}


def fit_temperature(logits: npt.ArrayLike, labels: Ints, weights: Floats | None = None) -> float:
    """The temperature that minimises the (weighted) NLL of labels under
    softmax(logits / T)."""
    z = as_logits(logits)
    rows = np.arange(labels.shape[0])
    w = row_weights(weights, labels.shape[0])

    def loss(log_t: float) -> float:
        return float(-(log_softmax(z / np.exp(log_t), axis=1)[rows, labels] * w).mean())

    result = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def fit(logits: Floats, labels: Ints, weights: Floats | None = None) -> TemperatureScaling:
    return TemperatureScaling(fit_temperature(logits, labels, weights), logits.shape[1])


def load(parameters: Mapping[str, Any]) -> TemperatureScaling:
    return TemperatureScaling(float(parameters["temperature"]), int(parameters["classes"]))


METHOD = Method("temperature", "softmax(z / T), one parameter", fit, load)
