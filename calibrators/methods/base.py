"""What every calibration method provides, and the pieces several share.

A fitted method is a numpy reference (``predict``, float64) and an ONNX graph from
``logits`` float32 [N, C] to ``probabilities`` float32 [N, C] that must agree with it
to 1e-5. Its parameters round-trip through JSON, so a fit can be exported later.

Top-label methods (isotonic, histogram binning) calibrate only the confidence of the
predicted class. The rest of the mass goes to the other classes in proportion to
their raw probabilities, computed as a softmax over the logits with the top one
masked out, which stays exact when the top probability rounds to 1. The calibrated
confidence is kept below 1 - ``CONFIDENCE_CEILING_GAP`` (no class is ever certain to
be wrong) and above the point where the runner-up would overtake, so calibration
never changes the predicted class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
from onnx import NodeProto, TensorProto, helper, numpy_helper

from calibrators.metrics import Floats, Ints, softmax, unit_mean
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME

CONFIDENCE_CEILING_GAP = 1e-6
# Keeps the predicted class strictly ahead of the runner-up after float32 rounding.
RUNNER_UP_MARGIN = 1e-6


@dataclass
class Graph:
    """ONNX nodes and initialisers from INPUT_NAME to OUTPUT_NAME."""

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float64) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


class Fitted(Protocol):
    """A calibrator fitted on held-out data."""

    method: ClassVar[str]

    @property
    def class_count(self) -> int: ...

    def predict(self, logits: npt.ArrayLike) -> Floats:
        """Calibrated probabilities [N, C], float64: the reference the graph matches."""
        ...

    def graph(self) -> Graph: ...

    def parameters(self) -> dict[str, Any]:
        """JSON-ready parameters that ``load`` turns back into this calibrator."""
        ...


class Fit(Protocol):
    """Fit a method to labelled logits; weights weigh each row's part in the loss (a
    sampled dataset's inverse inclusion probabilities; None: all alike)."""

    def __call__(self, logits: Floats, labels: Ints, weights: Floats | None = None) -> Fitted: ...


@dataclass(frozen=True)
class Method:
    """A calibration method: how to fit it and how to load a saved fit."""

    name: str
    summary: str
    fit: Fit
    load: Callable[[Mapping[str, Any]], Fitted]
    binary_only: bool = False


def row_weights(weights: Floats | None, rows: int) -> Floats:
    """Each row's weight scaled to a mean of 1 (all 1 without weights)."""
    return np.ones(rows) if weights is None else unit_mean(weights)


def as_logits(logits: npt.ArrayLike) -> Floats:
    out: Floats = np.asarray(logits, dtype=np.float64)
    return out


def top_label_predict(logits: npt.ArrayLike, confidence_map: Callable[[Floats], Floats]) -> Floats:
    """Replace the top probability with confidence_map(top probability)."""
    z = as_logits(logits)
    rows = np.arange(z.shape[0])
    top = z.argmax(axis=1)
    p1 = softmax(z)[rows, top]
    masked = z.copy()
    masked[rows, top] = -np.inf
    others = softmax(masked)
    runner_up = others.max(axis=1)
    floor = runner_up / (1.0 + runner_up) + RUNNER_UP_MARGIN
    c = np.maximum(np.minimum(confidence_map(p1), 1.0 - CONFIDENCE_CEILING_GAP), floor)
    out: Floats = (1.0 - c)[:, None] * others
    out[rows, top] = c
    return out


def top_label_graph(classes: int, confidence_map: Callable[[Graph, str], str]) -> Graph:
    """The graph of ``top_label_predict``, in float64 inside; confidence_map adds the
    nodes that map the [N, 1] top probability to a [N, 1] calibrated confidence."""
    g = Graph()
    z = g.node("Cast", [INPUT_NAME], "z", to=TensorProto.DOUBLE)
    p = g.node("Softmax", [z], "p", axis=1)
    p1 = g.node("ReduceMax", [p], "p1", axes=[1], keepdims=1)
    top_index = g.node("ArgMax", [z], "top_index", axis=1, keepdims=1)
    class_range = g.const("class_range", np.arange(classes), np.int64)
    top = g.node("Equal", [top_index, class_range], "top")
    masked = g.node("Where", [top, g.const("minus_inf", -np.inf), z], "masked")
    others = g.node("Softmax", [masked], "others", axis=1)
    runner_up = g.node("ReduceMax", [others], "runner_up", axes=[1], keepdims=1)
    one = g.const("one", 1.0)
    share = g.node("Div", [runner_up, g.node("Add", [runner_up, one], "runner_up_1")], "share")
    floor = g.node("Add", [share, g.const("margin", RUNNER_UP_MARGIN)], "floor")
    raw = confidence_map(g, p1)
    capped = g.node("Min", [raw, g.const("ceiling", 1.0 - CONFIDENCE_CEILING_GAP)], "capped")
    c = g.node("Max", [capped, floor], "c")
    rest = g.node("Mul", [g.node("Sub", [one, c], "rest_mass"), others], "rest")
    out = g.node("Where", [top, c, rest], "calibrated")
    g.node("Cast", [out], OUTPUT_NAME, to=TensorProto.FLOAT)
    return g


def piecewise_linear_nodes(
    g: Graph, x: str, xs: Floats, ys: Floats, name: str, *, keepdims: bool
) -> str:
    """np.interp(x, xs, ys) with clipping at both ends, for strictly increasing xs
    (the last axis; leading axes broadcast against x's trailing ones), as
    ys[0] + sum_k slope_k * (clip(x, xs[k], xs[k+1]) - xs[k]), summed over the last
    axis. Returns the output's name."""
    lower, upper = xs[..., :-1], xs[..., 1:]
    slope = np.diff(ys, axis=-1) / (upper - lower)
    a = g.node("Min", [x, g.const(f"{name}_upper", upper)], f"{name}_a")
    b = g.node("Max", [a, g.const(f"{name}_lower", lower)], f"{name}_b")
    d = g.node("Sub", [b, f"{name}_lower"], f"{name}_d")
    e = g.node("Mul", [d, g.const(f"{name}_slope", slope)], f"{name}_e")
    axes = g.const(f"{name}_axes", [-1], np.int64)
    s = g.node("ReduceSum", [e, axes], f"{name}_s", keepdims=int(keepdims))
    return g.node("Add", [s, g.const(f"{name}_base", ys[..., 0])], f"{name}_y")


def strictly_increasing(xs: Floats, ys: Floats) -> tuple[Floats, Floats]:
    """At least two points with strictly increasing xs (a lone point gets a flat
    partner to its right), as ``piecewise_linear_nodes`` needs."""
    if xs.shape[0] == 1:
        return np.array([xs[0], xs[0] + 1.0]), np.array([ys[0], ys[0]])
    return xs, ys
