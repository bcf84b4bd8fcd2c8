"""What makes a feedback event unusable, and who may send which type: each refusal
names its field."""

from __future__ import annotations

from typing import Any

import pytest

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.feedback.access import check_method, check_type
from sidecar.feedback.validation import MAX_BATCH, check_batch_size, check_decision, check_event
from tests.unit.feedback.conftest import APP, REVIEW, SIDECAR


def event(**fields: Any) -> fpb.FeedbackEvent:
    base: dict[str, Any] = {
        "feedback_id": "f-1",
        "request_id": "r-1",
        "model": "digits",
        "type": fpb.FEEDBACK_OUTCOME,
        "label": fpb.Label(class_index=3),
    }
    base.update(fields)
    return fpb.FeedbackEvent(**base)


VALID = [
    event(),
    event(label=fpb.Label(name="cat")),
    event(type=fpb.FEEDBACK_EXPLICIT_CORRECTION, label=fpb.Label(class_index=0, name="dog")),
    event(type=fpb.FEEDBACK_RATING, label=None, rating=0.0),
    event(type=fpb.FEEDBACK_RATING, label=None, rating=1.0),
    event(type=fpb.FEEDBACK_IMPLICIT, label=None, signal=fpb.Signal(name="click", value=-2.5)),
    event(type=fpb.FEEDBACK_PREFERENCE, label=None, preferred_over="r-0"),
    event(type=fpb.FEEDBACK_REVIEW, user_context={"k": "v"}, occurred_at=1.5, source="app"),
]


@pytest.mark.parametrize("good", VALID)
def test_every_type_with_its_value_is_accepted(good: fpb.FeedbackEvent) -> None:
    check_event(good)


INVALID = [
    (event(feedback_id=""), "feedback_id"),
    (event(feedback_id="x" * 129), "feedback_id"),
    (event(request_id=""), "request_id"),
    (event(model=""), "model"),
    (event(model_version="v" * 200), "model_version"),
    (event(source="s" * 200), "source"),
    (event(occurred_at=-1.0), "occurred_at"),
    (event(occurred_at=float("nan")), "occurred_at"),
    (event(type=fpb.FEEDBACK_TYPE_UNSPECIFIED), "type"),
    (event(type=99), "type"),
    (event(label=None), "label"),
    (event(label=fpb.Label()), "label"),
    (event(label=fpb.Label(class_index=-1)), "label.class_index"),
    (event(type=fpb.FEEDBACK_RATING), "rating"),
    (event(type=fpb.FEEDBACK_RATING, label=None, rating=1.5), "rating"),
    (event(type=fpb.FEEDBACK_RATING, label=None, rating=float("inf")), "rating"),
    (event(type=fpb.FEEDBACK_IMPLICIT, label=None, signal=fpb.Signal(value=1)), "signal.name"),
    (
        event(type=fpb.FEEDBACK_IMPLICIT, label=None, signal=fpb.Signal(name="c", value=1e400)),
        "signal.value",
    ),
    (event(type=fpb.FEEDBACK_PREFERENCE, label=None, preferred_over="r-1"), "preferred_over"),
    (event(user_context={f"k{i}": "v" for i in range(100)}), "context"),
]


@pytest.mark.parametrize(("bad", "field"), INVALID)
def test_an_unusable_event_is_refused_naming_its_field(bad: fpb.FeedbackEvent, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_event(bad)
    assert refused.value.field.startswith(field), refused.value


def test_batches_hold_one_to_max_events() -> None:
    check_batch_size(1)
    check_batch_size(MAX_BATCH)
    for size in (0, MAX_BATCH + 1):
        with pytest.raises(InvalidRequest, match="events"):
            check_batch_size(size)


def test_each_role_sends_only_its_types() -> None:
    """client: every type but REVIEW; sidecar: OUTCOME; review: REVIEW; each a RETRACTION."""
    for kind in fpb.FeedbackType.values():
        if kind == fpb.FEEDBACK_TYPE_UNSPECIFIED:
            continue
        retraction = kind == fpb.FEEDBACK_RETRACTION
        allowed = {
            APP: kind != fpb.FEEDBACK_REVIEW,
            SIDECAR: kind == fpb.FEEDBACK_OUTCOME or retraction,
            REVIEW: kind == fpb.FEEDBACK_REVIEW or retraction,
        }
        for principal, may in allowed.items():
            if may:
                check_type(principal, kind)
            else:
                with pytest.raises(PermissionDenied, match=principal.name):
                    check_type(principal, kind)


def test_only_viewers_read_and_only_senders_record() -> None:
    for sender in (APP, SIDECAR, REVIEW):
        check_method(sender, "Record")
        check_method(sender, "RecordBatch")
        with pytest.raises(PermissionDenied, match="Get"):
            check_method(sender, "Get")


def decision(**fields: Any) -> fpb.DecisionRecord:
    base: dict[str, Any] = {
        "request_id": "r-1",
        "model": "digits",
        "model_version": "v3",
        "tier": dpb.TIER_AUTOMATED,
        "reason": dpb.REASON_THRESHOLD,
        "predicted_class": 1,
        "predicted_label": "one",
        "calibrated_confidence": 0.97,
        "logits": [0.1, 4.0, -1.0],
        "policy_revision": 7,
        "calibration_version": "temperature-v2",
        "decided_at": 1_800_000_000.0,
        "inclusion_probability": 0.05,
    }
    base.update(fields)
    return fpb.DecisionRecord(**base)


def test_a_decision_as_the_sidecar_makes_it_is_accepted() -> None:
    check_decision(decision())
    check_decision(decision(labels=["zero", "one", "two"]))
    check_decision(decision(tier=dpb.TIER_HUMAN_PRIMARY, inclusion_probability=1.0))


BAD_DECISIONS = [
    (decision(request_id=""), "request_id"),
    (decision(model=""), "model"),
    (decision(rule_id="r" * 200), "rule_id"),
    (decision(tier=dpb.TIER_UNSPECIFIED), "tier"),
    (decision(reason=77), "reason"),
    (decision(logits=[]), "logits"),
    (decision(logits=[1.0, float("nan")]), "logits"),
    (decision(predicted_class=3), "predicted_class"),
    (decision(calibrated_confidence=1.5), "calibrated_confidence"),
    (decision(inclusion_probability=0.0), "inclusion_probability"),
    (decision(inclusion_probability=1.01), "inclusion_probability"),
    (decision(decided_at=0.0), "decided_at"),
    (decision(labels=["zero", "one"]), "labels"),  # for 3 logits
    (decision(labels=["zero", "one", "one"]), "labels"),
    (decision(labels=["zero", "", "two"]), "labels"),
    (decision(labels=["zero", "uno", "two"]), "predicted_label"),  # class 1 is "one"
    (decision(string_attributes={"user": "u" * 2000}), "string_attributes['user']"),
    (decision(numeric_attributes={"amount": float("inf")}), "numeric_attributes['amount']"),
    (decision(string_attributes={f"a{i}": "x" for i in range(65)}), "string_attributes"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_DECISIONS)
def test_an_unusable_decision_is_refused_naming_its_field(
    bad: fpb.DecisionRecord, field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_decision(bad)
    assert refused.value.field == field, refused.value


def test_only_sidecars_record_decisions() -> None:
    check_method(SIDECAR, "RecordDecisions")
    for other in (APP, REVIEW):
        with pytest.raises(PermissionDenied, match="RecordDecisions"):
            check_method(other, "RecordDecisions")
