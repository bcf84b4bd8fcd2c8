"""An annotation's verdict: the mapped reviewer, the label's class, ACCEPT or
OVERRIDE, the lead time; or the reason it is refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sidecar.core.labelstudio import ConfigNames, choice_result
from sidecar.labelstudio.annotations import Annotation, Refusal, Refused, judge
from sidecar.review.item import Resolution, Verdict
from tests.escalations import escalation

NAMES = ConfigNames("text", "label", "input")
REVIEWERS = {"bob@example.com": "bob"}
ESCALATION = escalation("e1", labels=["a", "b", "c"])  # predicts 'b'


def annotation(*labels: str, user: str = "Bob@example.com", **fields: Any) -> Annotation:
    values: dict[str, Any] = {
        "annotation_id": 1,
        "task_id": 7,
        "user_email": user,
        "result": [choice_result(NAMES, label) for label in labels],
        "lead_time": 12.5,
        "created_at": 1000.0,
    }
    return Annotation(**(values | fields))


def test_the_models_label_is_an_accept() -> None:
    """The model's label: ACCEPT of its class, by the mapped reviewer, in the lead time."""
    given = judge(annotation("b"), ESCALATION, REVIEWERS)
    assert given == Resolution("bob", Verdict.ACCEPT, 1, "b", "", 12.5, 1000.0)


def test_another_label_is_an_override_with_its_class() -> None:
    given = judge(annotation("c"), ESCALATION, REVIEWERS)
    assert isinstance(given, Resolution)
    assert (given.verdict, given.label_class, given.label) == (Verdict.OVERRIDE, 2, "c")


def test_a_fallback_is_always_an_override() -> None:
    """No prediction (a fallback) cannot be accepted."""
    fallback = escalation("e2", labels=["a", "b", "c"], predicted_class=-1, predicted_label="")
    given = judge(annotation("a"), fallback, REVIEWERS)
    assert isinstance(given, Resolution)
    assert given.verdict is Verdict.OVERRIDE


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (annotation("b", user="eve@example.com"), Refusal.UNMAPPED_REVIEWER),
        (annotation("b", user=""), Refusal.UNMAPPED_REVIEWER),
        (annotation("zebra"), Refusal.LABEL_OUTSIDE_LIST),
        (annotation(), Refusal.NO_LABEL),
        (annotation("a", "b"), Refusal.NO_LABEL),
        (annotation("b", was_cancelled=True), Refusal.NO_LABEL),
    ],
)
def test_what_cannot_be_trusted_or_resolved_is_refused(made: Annotation, reason: Refusal) -> None:
    given = judge(made, ESCALATION, REVIEWERS)
    assert isinstance(given, Refused)
    assert given.reason is reason


def test_an_escalation_without_labels_is_refused() -> None:
    given = judge(annotation("b"), escalation("e3"), REVIEWERS)
    assert isinstance(given, Refused)
    assert given.reason is Refusal.NO_LABEL_LIST


def test_a_lead_time_that_is_not_a_number_counts_as_zero() -> None:
    given = judge(annotation("b", lead_time=math.nan), ESCALATION, REVIEWERS)
    assert isinstance(given, Resolution)
    assert given.time_to_label_seconds == 0.0
