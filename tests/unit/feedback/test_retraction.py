"""A RETRACTION withdraws a label its sender gave: the label stays in the log (a
request's history shows both) and no longer labels anything: not a dataset built
after it, not the monitor's observations, not the loop's health."""

from __future__ import annotations

import pytest

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from monitor.recorded import observations
from sidecar.clock import FakeClock
from sidecar.errors import InvalidRequest
from sidecar.feedback.dataset import label_class
from sidecar.feedback.ingest import REJECTED, FeedbackLog
from sidecar.feedback.store import FeedbackStore
from tests.unit.feedback.conftest import APP, REVIEW, SIDECAR
from tests.unit.feedback.test_validation import decision, event

DECIDED = 1_800_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(DECIDED + 10)


@pytest.fixture
def feedback(store: FeedbackStore, clock: FakeClock) -> FeedbackLog:
    log = FeedbackLog(store, clock, monitor_window=1e9)
    log.record_decisions(
        SIDECAR, [decision(request_id="r-1", tier=dpb.TIER_HUMAN_ASSISTED, inclusion_probability=1)]
    )
    return log


def review(feedback_id: str, cls: int) -> fpb.FeedbackEvent:
    return event(
        feedback_id=feedback_id, type=fpb.FEEDBACK_REVIEW, label=fpb.Label(class_index=cls)
    )


def retraction(feedback_id: str, retracts: str, request_id: str = "r-1") -> fpb.FeedbackEvent:
    return event(
        feedback_id=feedback_id,
        request_id=request_id,
        type=fpb.FEEDBACK_RETRACTION,
        label=None,
        retracts=retracts,
    )


def labels(feedback: FeedbackLog, until: float) -> list[int | None]:
    return [label_class(item) for item in feedback.store.labelled("digits", 0.0, until)]


def test_a_retracted_label_labels_nothing_but_stays_in_the_history(
    feedback: FeedbackLog, clock: FakeClock
) -> None:
    """After the retraction: no dataset row, an unlabelled observation, no coverage;
    the history keeps the label and its retraction; a dataset up to before it is as it was."""
    feedback.record(REVIEW, review("review-e1", 2))
    clock.advance(10)
    before = clock.now()
    assert labels(feedback, before) == [2]
    assert feedback.monitor()["coverage"] == {("digits", "HUMAN_ASSISTED"): 1.0}
    clock.advance(10)
    assert feedback.record(REVIEW, retraction("review-e1-retracted", "review-e1")).status == (
        "ACCEPTED"
    )
    clock.advance(10)
    assert labels(feedback, clock.now()) == []
    assert labels(feedback, before) == [2]  # the log as of then: the same dataset
    (observed,) = observations(feedback.store, "digits", 0.0, clock.now())
    assert observed.label is None
    assert feedback.monitor()["coverage"] == {("digits", "HUMAN_ASSISTED"): 0.0}
    history = feedback.history("r-1").events
    assert [(e.type, e.retracts) for e in history] == [
        ("REVIEW", ""),
        ("RETRACTION", "review-e1"),
    ]


def test_the_label_that_stands_is_the_latest_after_a_retraction(
    feedback: FeedbackLog, clock: FakeClock
) -> None:
    """Review, retraction, a second review of another class: the second is the label,
    and the health counts it (an override of the prediction, class 1)."""
    feedback.record(REVIEW, review("review-e1", 1))
    feedback.record(REVIEW, retraction("review-e1-retracted", "review-e1"))
    feedback.record(REVIEW, review("review-e1-2", 0))
    clock.advance(1)
    assert labels(feedback, clock.now()) == [0]
    (observed,) = observations(feedback.store, "digits", 0.0, clock.now())
    assert observed.label == 0
    assert feedback.monitor()["override_rate"] == {("digits", "HUMAN_ASSISTED"): 1.0}


def test_only_ones_own_recorded_label_about_the_same_request_can_be_retracted(
    feedback: FeedbackLog,
) -> None:
    """Refused naming retracts: an id not recorded, another sender's label, a label
    about another request, an event that is no label, the retraction's own id."""
    feedback.record(REVIEW, review("review-e1", 1))
    feedback.record(APP, event(feedback_id="rating", type=fpb.FEEDBACK_RATING, label=None,
                               rating=0.5))  # fmt: skip
    refused = {
        "nothing": (REVIEW, retraction("x1", "review-e404"), "is not recorded"),
        "not theirs": (APP, retraction("x2", "review-e1"), "sent by another principal"),
        "elsewhere": (REVIEW, retraction("x3", "review-e1", "r-2"), "about request_id 'r-1'"),
        "no label": (APP, retraction("x4", "rating"), "a RATING event, not a label"),
        "itself": (REVIEW, retraction("x5", "x5"), "names the event's own feedback_id"),
    }
    for why, (sender, retract, message) in refused.items():
        with pytest.raises(InvalidRequest, match=message) as raised:
            feedback.record(sender, retract)
        assert raised.value.field == "retracts", why
    results = feedback.record_batch(
        REVIEW, [retraction("x6", "review-e404"), retraction("x7", "review-e1")]
    )
    assert [(r.status, r.message.split(":")[0]) for r in results] == [
        (REJECTED, "retracts"),
        ("ACCEPTED", ""),
    ]
