"""Platt scaling (Platt 1999) for two classes: P(class 1) = sigmoid(a * s + b) on the
score s = z1 - z0, fitted by maximum likelihood against Platt's smoothed targets
((n1 + 1) / (n1 + 2) for positives, 1 / (n0 + 2) for negatives), the same fit as
scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import expit

from calibrators.methods.base import Graph, Method, as_logits, row_weights
from calibrators.metrics import Floats, Ints
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME

# Scores this large are divided by the largest before fitting (the fit is
# scale-invariant), which keeps L-BFGS well conditioned.
LARGE_SCORE = 30.0


@dataclass(frozen=True, eq=False)
class PlattScaling:
    method: ClassVar[str] = "platt"
    slope: float
    intercept: float

    @property
    def class_count(self) -> int:
        return 2

    def predict(self, logits: npt.ArrayLike) -> Floats:
        z = as_logits(logits)
        positive = expit(self.slope * (z[:, 1] - z[:, 0]) + self.intercept)
        return np.stack([1.0 - positive, positive], axis=1)

    def graph(self) -> Graph:
        # softmax([0, u]) = [1 - sigmoid(u), sigmoid(u)] with u = a * (z1 - z0) + b,
        # and [0, u] = z @ W + c.
        g = Graph()
        w = [[0.0, -self.slope], [0.0, self.slope]]
        u = g.node("MatMul", [INPUT_NAME, g.const("w", w, np.float32)], "u")
        shifted = g.node("Add", [u, g.const("c", [0.0, self.intercept], np.float32)], "shifted")
        g.node("Softmax", [shifted], OUTPUT_NAME, axis=1)
        return g

    def parameters(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept}


def fit(logits: Floats, labels: Ints, weights: Floats | None = None) -> PlattScaling:
    z = as_logits(logits)
    w = row_weights(weights, z.shape[0])
    if z.shape[1] != 2:
        raise ValueError(f"Platt scaling is for two classes, got {z.shape[1]}")
    score = z[:, 1] - z[:, 0]
    largest = float(np.abs(score).max())
    scale = largest if largest >= LARGE_SCORE else 1.0
    s = score / scale
    positives = labels > 0
    n1 = float(w[positives].sum())
    n0 = float(w.sum()) - n1
    target = np.where(positives, (n1 + 1.0) / (n1 + 2.0), 1.0 / (n0 + 2.0))

    def loss(params: Floats) -> tuple[float, Floats]:
        u = params[0] * s + params[1]
        residual = (expit(u) - target) * w
        value = float((np.logaddexp(0.0, u) - target * u) @ w)
        return value, np.array([residual @ s, residual.sum()])

    start = np.array([0.0, math.log((n1 + 1.0) / (n0 + 1.0))])
    result = minimize(
        loss,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-6, "ftol": 64 * np.finfo(float).eps},
    )
    return PlattScaling(float(result.x[0]) / scale, float(result.x[1]))


def load(parameters: Mapping[str, Any]) -> PlattScaling:
    return PlattScaling(float(parameters["slope"]), float(parameters["intercept"]))


METHOD = Method("platt", "sigmoid(a * (z1 - z0) + b), two classes only", fit, load, True)
