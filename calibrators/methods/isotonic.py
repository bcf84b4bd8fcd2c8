"""Isotonic regression (Zadrozny and Elkan 2002), fitted with scikit-learn's
``IsotonicRegression`` and exported as its piecewise-linear interpolant.

Two variants:

- ``isotonic``: top-label. One monotone map from the top probability to the chance
  the prediction is right; the predicted class never changes (``base``).
- ``isotonic-ovr``: one-vs-rest. A monotone map per class from p_k to P(y = k),
  then each row renormalised (uniform where every map gives 0), the multi-class
  construction of scikit-learn's ``CalibratedClassifierCV(method="isotonic")``.
  Its graph holds C x K breakpoints and evaluates N x C x K of them per batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from onnx import TensorProto
from sklearn.isotonic import IsotonicRegression

from calibrators.methods.base import (
    Graph,
    Method,
    as_logits,
    piecewise_linear_nodes,
    strictly_increasing,
    top_label_graph,
    top_label_predict,
)
from calibrators.metrics import Floats, Ints, softmax
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME


def _isotonic(x: Floats, y: Floats, weights: Floats | None) -> tuple[Floats, Floats]:
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    model.fit(x, y, sample_weight=weights)
    return strictly_increasing(
        np.asarray(model.X_thresholds_, dtype=np.float64),
        np.asarray(model.y_thresholds_, dtype=np.float64),
    )


@dataclass(frozen=True, eq=False)
class TopLabelIsotonic:
    method: ClassVar[str] = "isotonic"
    xs: Floats
    ys: Floats
    classes: int

    @property
    def class_count(self) -> int:
        return self.classes

    def predict(self, logits: npt.ArrayLike) -> Floats:
        return top_label_predict(logits, lambda p1: np.interp(p1, self.xs, self.ys))

    def graph(self) -> Graph:
        return top_label_graph(
            self.classes,
            lambda g, p1: piecewise_linear_nodes(g, p1, self.xs, self.ys, "iso", keepdims=True),
        )

    def parameters(self) -> dict[str, Any]:
        return {"xs": self.xs.tolist(), "ys": self.ys.tolist(), "classes": self.classes}


def fit_top_label(logits: Floats, labels: Ints, weights: Floats | None = None) -> TopLabelIsotonic:
    p = softmax(logits)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    xs, ys = _isotonic(p.max(axis=1), correct, weights)
    return TopLabelIsotonic(xs, ys, logits.shape[1])


def load_top_label(parameters: Mapping[str, Any]) -> TopLabelIsotonic:
    return TopLabelIsotonic(
        np.asarray(parameters["xs"], dtype=np.float64),
        np.asarray(parameters["ys"], dtype=np.float64),
        int(parameters["classes"]),
    )


@dataclass(frozen=True, eq=False)
class OneVsRestIsotonic:
    """Per-class breakpoints, padded to a common length with flat segments beyond 1."""

    method: ClassVar[str] = "isotonic-ovr"
    xs: tuple[Floats, ...]
    ys: tuple[Floats, ...]

    @property
    def class_count(self) -> int:
        return len(self.xs)

    def predict(self, logits: npt.ArrayLike) -> Floats:
        p = softmax(as_logits(logits))
        mapped = np.stack(
            [np.interp(p[:, k], self.xs[k], self.ys[k]) for k in range(self.class_count)], axis=1
        )
        total = mapped.sum(axis=1, keepdims=True)
        uniform = np.full_like(mapped, 1.0 / self.class_count)
        out: Floats = np.divide(mapped, total, out=uniform, where=total != 0)
        return out

    def graph(self) -> Graph:
        width = max(x.shape[0] for x in self.xs)
        xs = np.stack([_pad(x, width, step=1.0) for x in self.xs])
        ys = np.stack([_pad(y, width, step=0.0) for y in self.ys])
        g = Graph()
        z = g.node("Cast", [INPUT_NAME], "z", to=TensorProto.DOUBLE)
        p = g.node("Softmax", [z], "p", axis=1)
        column = g.node("Unsqueeze", [p, g.const("last_axis", [2], np.int64)], "p_column")
        mapped = piecewise_linear_nodes(g, column, xs, ys, "iso", keepdims=False)
        total = g.node("ReduceSum", [mapped, g.const("class_axis", [1], np.int64)], "total")
        zero = g.node("Equal", [total, g.const("zero", 0.0)], "all_zero")
        safe_total = g.node("Where", [zero, g.const("one", 1.0), total], "safe_total")
        normalised = g.node("Div", [mapped, safe_total], "normalised")
        uniform = g.const("uniform", 1.0 / self.class_count)
        out = g.node("Where", [zero, uniform, normalised], "calibrated")
        g.node("Cast", [out], OUTPUT_NAME, to=TensorProto.FLOAT)
        return g

    def parameters(self) -> dict[str, Any]:
        return {"xs": [x.tolist() for x in self.xs], "ys": [y.tolist() for y in self.ys]}


def _pad(values: Floats, width: int, step: float) -> Floats:
    """Extend to width points: xs continue past 1 (never reached by a probability),
    ys repeat their last value, so the extra segments are flat and contribute 0."""
    extra = width - values.shape[0]
    tail = values[-1] + step * np.arange(1, extra + 1)
    return np.concatenate([values, tail])


def fit_one_vs_rest(
    logits: Floats, labels: Ints, weights: Floats | None = None
) -> OneVsRestIsotonic:
    p = softmax(logits)
    fitted = [
        _isotonic(p[:, k], (labels == k).astype(np.float64), weights) for k in range(p.shape[1])
    ]
    return OneVsRestIsotonic(tuple(x for x, _ in fitted), tuple(y for _, y in fitted))


def load_one_vs_rest(parameters: Mapping[str, Any]) -> OneVsRestIsotonic:
    return OneVsRestIsotonic(
        tuple(np.asarray(x, dtype=np.float64) for x in parameters["xs"]),
        tuple(np.asarray(y, dtype=np.float64) for y in parameters["ys"]),
    )


TOP_LABEL = Method(
    "isotonic",
    "monotone map of the top probability, class unchanged",
    fit_top_label,
    load_top_label,
)
ONE_VS_REST = Method(
    "isotonic-ovr",
    "monotone map per class, renormalised (scikit-learn's multi-class isotonic)",
    fit_one_vs_rest,
    load_one_vs_rest,
)
