"""The calibration methods, by name. Each module holds one method's fit, numpy
reference, ONNX graph and saved parameters; ``base`` holds what they share."""

from __future__ import annotations

from calibrators.methods import binning, isotonic, platt, temperature, vector
from calibrators.methods.base import Fitted, Method

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        temperature.METHOD,
        vector.METHOD,
        platt.METHOD,
        isotonic.TOP_LABEL,
        isotonic.ONE_VS_REST,
        binning.METHOD,
    )
}


def applicable(classes: int) -> list[Method]:
    """The methods that can calibrate a model with this many classes."""
    return [m for m in METHODS.values() if classes == 2 or not m.binary_only]


def method(name: str, classes: int | None = None) -> Method:
    """The method called name; with classes, only if it can calibrate that many."""
    try:
        found = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHODS)}") from None
    if classes is not None and found not in applicable(classes):
        raise ValueError(f"{name} needs two classes, the data has {classes}")
    return found


__all__ = ["METHODS", "Fitted", "Method", "applicable", "method"]
