"""Vector scaling (Guo et al. 2017): softmax(w * z + b) with a scale and a bias per
class, 2C parameters fitted by minimising NLL with L-BFGS and an exact gradient.
More flexible than temperature scaling, and able to change the predicted class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import log_softmax

from calibrators.methods.base import Graph, Method, as_logits, row_weights
from calibrators.metrics import Floats, Ints, softmax
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True, eq=False)
class VectorScaling:
    method: ClassVar[str] = "vector"
    weights: Floats
    bias: Floats

    @property
    def class_count(self) -> int:
        return int(self.weights.shape[0])

    def predict(self, logits: npt.ArrayLike) -> Floats:
        return softmax(as_logits(logits) * self.weights + self.bias)

    def graph(self) -> Graph:
        g = Graph()
        scaled = g.node("Mul", [INPUT_NAME, g.const("weights", self.weights, np.float32)], "scaled")
        shifted = g.node("Add", [scaled, g.const("bias", self.bias, np.float32)], "shifted")
        g.node("Softmax", [shifted], OUTPUT_NAME, axis=1)
        return g

    def parameters(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist()}


def nll_and_gradient(
    params: Floats, z: Floats, onehot: Floats, rows: Floats | None = None
) -> tuple[float, Floats]:
    """Mean NLL of softmax(w * z + b), each row weighted by rows (mean 1; None: all
    1), and its gradient in (w, b)."""
    rows = row_weights(rows, z.shape[0])
    classes = z.shape[1]
    w, b = params[:classes], params[classes:]
    log_p = log_softmax(z * w + b, axis=1)
    residual = (np.exp(log_p) - onehot) * (rows / z.shape[0])[:, None]
    grad = np.concatenate([(residual * z).sum(axis=0), residual.sum(axis=0)])
    return float(-((log_p * onehot).sum(axis=1) @ rows) / z.shape[0]), grad


def fit(logits: Floats, labels: Ints, weights: Floats | None = None) -> VectorScaling:
    z = as_logits(logits)
    classes = z.shape[1]
    onehot = np.eye(classes)[labels]
    start = np.concatenate([np.ones(classes), np.zeros(classes)])
    result = minimize(
        nll_and_gradient,
        start,
        args=(z, onehot, row_weights(weights, z.shape[0])),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 1000, "gtol": 1e-8},
    )
    # The bias is defined up to a constant; centre it so saved fits compare.
    bias = result.x[classes:] - result.x[classes:].mean()
    return VectorScaling(result.x[:classes].copy(), bias)


def load(parameters: Mapping[str, Any]) -> VectorScaling:
    weights = np.asarray(parameters["weights"], dtype=np.float64)
    return VectorScaling(weights, np.asarray(parameters["bias"], dtype=np.float64))


METHOD = Method("vector", "softmax(w * z + b), a scale and bias per class", fit, load)
