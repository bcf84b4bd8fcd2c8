"""Histogram binning (Zadrozny and Elkan 2001), top-label: the top probability is
cut into equal-mass bins and replaced by its bin's accuracy, smoothed as
(correct + 1) / (rows + 2) so that no bin claims certainty from a few rows. The
predicted class never changes (``base``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from calibrators.methods.base import (
    Graph,
    Method,
    row_weights,
    top_label_graph,
    top_label_predict,
)
from calibrators.metrics import Floats, Ints, softmax

BINS = 15


@dataclass(frozen=True, eq=False)
class HistogramBinning:
    """Bin i is (edges[i-1], edges[i]] over the interior edges; its value values[i]."""

    method: ClassVar[str] = "histogram"
    edges: Floats
    values: Floats
    classes: int

    @property
    def class_count(self) -> int:
        return self.classes

    def predict(self, logits: npt.ArrayLike) -> Floats:
        return top_label_predict(
            logits, lambda p1: self.values[np.searchsorted(self.edges, p1, side="left")]
        )

    def graph(self) -> Graph:
        # values[bin] = values[0] + sum_i (values[i+1] - values[i]) * (p1 > edges[i])
        steps = np.diff(self.values)

        def confidence(g: Graph, p1: str) -> str:
            above = g.node("Greater", [p1, g.const("edges", self.edges)], "above")
            weights = g.node("Cast", [above], "above_f", to=TensorProto.DOUBLE)
            stepped = g.node("Mul", [weights, g.const("steps", steps)], "stepped")
            axes = g.const("bin_axis", [1], np.int64)
            total = g.node("ReduceSum", [stepped, axes], "step_sum", keepdims=1)
            return g.node("Add", [total, g.const("first", self.values[0])], "binned")

        return top_label_graph(self.classes, confidence)

    def parameters(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "values": self.values.tolist(),
            "classes": self.classes,
        }


def fit(
    logits: Floats, labels: Ints, weights: Floats | None = None, bins: int = BINS
) -> HistogramBinning:
    """Equal-mass bins of the labelled rows' confidence, each bin's value its rows'
    (weighted) accuracy with a Laplace prior."""
    p = softmax(logits)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.unique(np.quantile(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    if edges.shape[0] == 0:  # bins == 1: one interior edge at the median keeps the graph whole
        edges = np.array([float(np.median(confidence))])
    index = np.searchsorted(edges, confidence, side="left")
    w = row_weights(weights, labels.shape[0])
    rows = np.bincount(index, weights=w, minlength=edges.shape[0] + 1)
    hits = np.bincount(index, weights=correct * w, minlength=edges.shape[0] + 1)
    values = (hits + 1.0) / (rows + 2.0)
    return HistogramBinning(edges, values, logits.shape[1])


def load(parameters: Mapping[str, Any]) -> HistogramBinning:
    return HistogramBinning(
        np.asarray(parameters["edges"], dtype=np.float64),
        np.asarray(parameters["values"], dtype=np.float64),
        int(parameters["classes"]),
    )


METHOD = Method("histogram", f"{BINS} equal-mass bins of the top probability", fit, load)
