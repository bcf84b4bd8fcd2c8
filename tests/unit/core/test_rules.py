"""Rule conditions: operators, missing attributes, type mismatches, signals."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.core.request import RouteInput
from sidecar.core.rules import Condition, Rule, first_match
from sidecar.core.signals import Signals

SIGNALS = Signals(predicted_class=2, confidence=0.7, margin=0.4, entropy=0.9)


def holds(condition: Condition, **attributes: str | float) -> bool:
    strings = {k: v for k, v in attributes.items() if isinstance(v, str)}
    numbers = {k: float(v) for k, v in attributes.items() if not isinstance(v, str)}
    request = RouteInput(
        "r",
        "m",
        np.zeros(3, dtype=np.float32),
        domain="eu",
        string_attributes=strings,
        numeric_attributes=numbers,
    )
    return Rule("x", (condition,)).compile(("a", "b", "c")).matches(request, SIGNALS)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("lt", 10.0, True),
        ("le", 5.0, True),
        ("gt", 5.0, False),
        ("ge", 5.0, True),
        ("eq", 5.0, True),
        ("ne", 5.0, False),
    ],
)
def test_numeric_operators(op: str, value: float, expected: bool) -> None:
    """Numeric comparisons against a numeric attribute."""
    assert holds(Condition("attributes.amount", op, value), amount=5.0) is expected


def test_string_equality_and_sets() -> None:
    """eq, ne, in and not_in on a string attribute."""
    assert holds(Condition("attributes.topic", "eq", "loans"), topic="loans")
    assert holds(Condition("attributes.topic", "ne", "loans"), topic="cards")
    assert holds(Condition("attributes.topic", "in", ("loans", "cards")), topic="cards")
    assert holds(Condition("attributes.topic", "not_in", ("loans",)), topic="cards")
    assert not holds(Condition("attributes.topic", "not_in", ("cards",)), topic="cards")


def test_missing_attribute_never_holds() -> None:
    """A condition on an absent attribute is false, including ne and not_in."""
    for op, value in [("eq", "x"), ("ne", "x"), ("not_in", ("x",)), ("gt", 1.0)]:
        assert not holds(Condition("attributes.topic", op, value))  # type: ignore[arg-type]


def test_type_mismatch_never_holds() -> None:
    """A numeric comparison on a string attribute (or the reverse) is false."""
    assert not holds(Condition("attributes.amount", "gt", 1.0), amount="lots")
    assert not holds(Condition("attributes.topic", "eq", "5"), topic=5.0)


def test_signal_and_request_fields() -> None:
    """Conditions may test the domain, the confidence, the margin and the predicted label."""
    assert holds(Condition("domain", "eq", "eu"))
    assert holds(Condition("confidence", "lt", 0.8))
    assert holds(Condition("margin", "ge", 0.4))
    assert holds(Condition("predicted_label", "eq", "c"))
    assert holds(Condition("predicted_class", "eq", 2.0))


def test_all_conditions_must_hold_and_first_rule_wins() -> None:
    """A rule is a conjunction; first_match returns the earliest matching rule."""
    request = RouteInput(
        "r", "m", np.zeros(3, dtype=np.float32), numeric_attributes={"amount": 50.0}
    )
    rules = [
        Rule(
            "both", (Condition("attributes.amount", "gt", 10.0), Condition("domain", "eq", "eu"))
        ).compile(()),
        Rule("one", (Condition("attributes.amount", "gt", 10.0),)).compile(()),
        Rule("also", (Condition("attributes.amount", "gt", 1.0),)).compile(()),
    ]
    match = first_match(rules, request, SIGNALS)
    assert match is not None
    assert match.id == "one"
    assert first_match(rules[:1], request, SIGNALS) is None
