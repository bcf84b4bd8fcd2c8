"""Business rules: conditions on request attributes and calibrated signals that send
a prediction to a person (HUMAN_PRIMARY) whatever its confidence.

A rule matches when all its conditions hold; the first matching rule wins. A
condition on an attribute the request does not carry, or of the other type, does
not hold (so ``ne`` and ``not_in`` need the attribute present too). Conditions are
compiled into closures once, when a policy loads."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.core.request import RouteInput, Signals

# What a condition may test besides request attributes (``attributes.<name>``).
SIGNAL_FIELDS = frozenset(
    {
        "domain",
        "model_version",
        "predicted_class",
        "predicted_label",
        "confidence",
        "margin",
        "entropy",
    }
)
NUMERIC_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
EQUALITY_OPS = frozenset({"eq", "ne"})
SET_OPS = frozenset({"in", "not_in"})
OPS = frozenset(NUMERIC_OPS) | EQUALITY_OPS | SET_OPS

Getter = Callable[[RouteInput, Signals | None], object]
Predicate = Callable[[RouteInput, Signals | None], bool]


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``, for example ``attributes.amount gt 10000``."""

    field: str
    op: str
    value: str | float | tuple[str | float, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """A named rule; ``matches`` is compiled from its conditions."""

    id: str
    conditions: tuple[Condition, ...]

    def compile(self, labels: Sequence[str]) -> CompiledRule:
        """Closures for the conditions; labels name the classes for predicted_label."""
        return CompiledRule(self.id, tuple(_compile(c, labels) for c in self.conditions))


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    predicates: tuple[Predicate, ...]

    def matches(self, request: RouteInput, signals: Signals | None) -> bool:
        for predicate in self.predicates:  # noqa: SIM110 (all() builds a generator per call)
            if not predicate(request, signals):
                return False
        return True


def first_match(
    rules: Sequence[CompiledRule], request: RouteInput, signals: Signals | None
) -> CompiledRule | None:
    """The first rule that matches, or None."""
    for rule in rules:
        if rule.matches(request, signals):
            return rule
    return None


def _compile(condition: Condition, labels: Sequence[str]) -> Predicate:
    get = _getter(condition.field, labels)
    expected = condition.value
    op = condition.op
    if op in NUMERIC_OPS:
        compare = NUMERIC_OPS[op]

        def numeric(request: RouteInput, signals: Signals | None) -> bool:
            actual = get(request, signals)
            return _is_number(actual) and compare(actual, expected)

        return numeric
    if op in SET_OPS:
        members = frozenset(expected) if isinstance(expected, tuple) else frozenset([expected])
        want = op == "in"

        def in_set(request: RouteInput, signals: Signals | None) -> bool:
            actual = get(request, signals)
            return actual is not None and (actual in members) == want

        return in_set
    want_equal = op == "eq"

    def equality(request: RouteInput, signals: Signals | None) -> bool:
        actual = get(request, signals)
        if actual is None or _is_number(actual) != _is_number(expected):
            return False
        return (actual == expected) == want_equal

    return equality


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _getter(field: str, labels: Sequence[str]) -> Getter:
    if field.startswith("attributes."):
        name = field.removeprefix("attributes.")

        def attribute(request: RouteInput, _signals: Signals | None) -> object:
            number = (request.numeric_attributes or {}).get(name)
            if number is not None:
                return number
            return (request.string_attributes or {}).get(name)

        return attribute
    if field in ("domain", "model_version"):
        return lambda request, _signals: getattr(request, field)
    if field == "predicted_label":
        return lambda _request, signals: (
            None if signals is None else labels[signals.predicted_class]
        )

    def signal(_request: RouteInput, signals: Signals | None) -> object:
        return None if signals is None else getattr(signals, field)

    return signal
