"""Business rules: conditions on request attributes and calibrated signals that send
a prediction to a person (HUMAN_PRIMARY) whatever its confidence.

A rule matches when all its conditions hold; the first matching rule wins. A
condition on an attribute the request does not carry, or of the other type, does
not hold (so ``ne`` and ``not_in`` need the attribute present too). Conditions are
compiled into closures once, when a policy loads: each condition is one test of a
value, which a unary Route reads from its request and a batch from its columns, so
both paths apply the same rule the same way."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.core.request import RouteInput
from sidecar.core.signals import SignalRow, Signals

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
Test = Callable[[object], bool]  # whether a condition holds for the field's value
RowGetter = Callable[["RuleColumns", int], object]


@dataclass(frozen=True, slots=True)
class RuleColumns:
    """What rules read of a batch's rows (the batch path's input): row i's values."""

    domains: Sequence[str]
    model_versions: Sequence[str]
    string_attributes: Sequence[Mapping[str, str] | None]
    numeric_attributes: Sequence[Mapping[str, float] | None]
    signals: Sequence[SignalRow]  # class, confidence, margin, entropy


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
        compiled = [(_test(c), _getter(c.field, labels), _row_getter(c.field, labels))
                    for c in self.conditions]  # fmt: skip
        return CompiledRule(
            self.id,
            tuple(_predicate(test, get) for test, get, _ in compiled),
            tuple((test, get_row) for test, _, get_row in compiled),
        )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule's conditions, each one test of a field's value read two ways: from one
    request (``matches``) or from row i of a batch (``matching_rows``)."""

    id: str
    predicates: tuple[Predicate, ...]
    row_tests: tuple[tuple[Test, RowGetter], ...] = ()

    def matches(self, request: RouteInput, signals: Signals | None) -> bool:
        for predicate in self.predicates:  # noqa: SIM110 (all() builds a generator per call)
            if not predicate(request, signals):
                return False
        return True

    def matching_rows(self, columns: RuleColumns, rows: Sequence[int]) -> list[int]:
        """The rows among rows (indices into columns) that this rule matches."""
        for test, get in self.row_tests:
            rows = [i for i in rows if test(get(columns, i))]
        return list(rows)


def first_match(
    rules: Sequence[CompiledRule], request: RouteInput, signals: Signals | None
) -> CompiledRule | None:
    """The first rule that matches, or None."""
    for rule in rules:
        if rule.matches(request, signals):
            return rule
    return None


def _predicate(test: Test, get: Getter) -> Predicate:
    return lambda request, signals: test(get(request, signals))


def _test(condition: Condition) -> Test:
    expected = condition.value
    op = condition.op
    if op in NUMERIC_OPS:
        compare = NUMERIC_OPS[op]
        return lambda actual: _is_number(actual) and compare(actual, expected)
    if op in SET_OPS:
        members = frozenset(expected) if isinstance(expected, tuple) else frozenset([expected])
        want = op == "in"
        return lambda actual: actual is not None and (actual in members) == want
    want_equal = op == "eq"
    expected_number = _is_number(expected)

    def equality(actual: object) -> bool:
        if actual is None or _is_number(actual) != expected_number:
            return False
        return (actual == expected) == want_equal

    return equality


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _attribute(
    strings: Mapping[str, str] | None, numbers: Mapping[str, float] | None, name: str
) -> object:
    number = (numbers or {}).get(name)
    if number is not None:
        return number
    return (strings or {}).get(name)


_SIGNAL_INDEX = {"predicted_class": 0, "confidence": 1, "margin": 2, "entropy": 3}


def _getter(field: str, labels: Sequence[str]) -> Getter:
    if field.startswith("attributes."):
        name = field.removeprefix("attributes.")
        return lambda request, _signals: _attribute(
            request.string_attributes, request.numeric_attributes, name
        )
    if field in ("domain", "model_version"):
        return lambda request, _signals: getattr(request, field)
    if field == "predicted_label":
        return lambda _request, signals: (
            None if signals is None else labels[signals.predicted_class]
        )
    return lambda _request, signals: None if signals is None else getattr(signals, field)


def _row_getter(field: str, labels: Sequence[str]) -> RowGetter:
    if field.startswith("attributes."):
        name = field.removeprefix("attributes.")
        return lambda c, i: _attribute(c.string_attributes[i], c.numeric_attributes[i], name)
    if field == "domain":
        return lambda c, i: c.domains[i]
    if field == "model_version":
        return lambda c, i: c.model_versions[i]
    if field == "predicted_label":
        return lambda c, i: labels[c.signals[i][0]]
    index = _SIGNAL_INDEX[field]
    return lambda c, i: c.signals[i][index]
