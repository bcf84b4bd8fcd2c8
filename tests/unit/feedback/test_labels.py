"""The Labels read: for a batch of request ids, the label that stands by the dataset's
rule over outcomes and corrections (never the queue's own reviews), on SQLite and
PostgreSQL; who may call it; what a bad request is refused for."""

from __future__ import annotations

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.clock import FakeClock
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.feedback.access import check_method
from sidecar.feedback.dataset import Labelled, chosen_label, label_class
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.validation import MAX_BATCH
from tests.unit.feedback.conftest import APP, REVIEW, SIDECAR
from tests.unit.feedback.test_validation import decision, event

DECIDED = 1_800_000_000.0
LABELS = ["zero", "one", "two"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(DECIDED + 10)


@pytest.fixture
def feedback(store: FeedbackStore, clock: FakeClock) -> FeedbackLog:
    """Decisions r-1 to r-5 (three classes, named); r-6 has none."""
    log = FeedbackLog(store, clock)
    log.record_decisions(
        SIDECAR, [decision(request_id=f"r-{i}", labels=LABELS) for i in range(1, 6)]
    )
    return log


def label(feedback_id: str, request_id: str, kind: int, **value: object) -> fpb.FeedbackEvent:
    value = value or {"label": fpb.Label(class_index=0)}
    return event(feedback_id=feedback_id, request_id=request_id, type=kind, **value)


def read(
    feedback: FeedbackLog, *request_ids: str, sources: tuple[str, ...] = ()
) -> dict[str, tuple[int, str, float]]:
    request = fpb.LabelsRequest(request_ids=request_ids, label_sources=sources)
    return {rid: (c.class_index, c.source, c.received_at) for rid, c in feedback.labels(request)}


def test_each_request_has_the_label_the_dataset_rule_gives(
    feedback: FeedbackLog, clock: FakeClock
) -> None:
    """An outcome beats a correction; the latest outcome wins; a name is resolved to
    its class; a review is not ground truth; a request without a decision or without
    a label is left out; received_at is the winning event's."""
    first = clock.now()
    feedback.record(APP, label("c1", "r-1", fpb.FEEDBACK_EXPLICIT_CORRECTION))
    feedback.record(APP, label("o1", "r-1", fpb.FEEDBACK_OUTCOME, label=fpb.Label(class_index=2)))
    clock.advance(5)
    feedback.record(APP, label("o2", "r-2", fpb.FEEDBACK_OUTCOME))
    clock.advance(5)
    feedback.record(APP, label("o3", "r-2", fpb.FEEDBACK_OUTCOME, label=fpb.Label(name="one")))
    feedback.record(APP, label("c3", "r-3", fpb.FEEDBACK_EXPLICIT_CORRECTION))
    feedback.record(REVIEW, label("v4", "r-4", fpb.FEEDBACK_REVIEW))
    feedback.record(APP, label("o6", "r-6", fpb.FEEDBACK_OUTCOME))
    now = clock.now()
    assert read(feedback, "r-6", "r-5", "r-4", "r-3", "r-2", "r-1") == {
        "r-3": (0, "correction", now),
        "r-2": (1, "outcome", now),
        "r-1": (2, "outcome", first),
    }
    assert list(read(feedback, "r-3", "r-1")) == ["r-3", "r-1"]  # in the order asked
    assert read(feedback, "r-1", sources=("correction",)) == {"r-1": (0, "correction", first)}


def test_a_retracted_outcome_gives_way_to_the_one_before(feedback: FeedbackLog) -> None:
    """The sender withdraws its latest outcome: the earlier one stands again; withdrawn
    too, the correction does."""
    feedback.record(APP, label("c1", "r-1", fpb.FEEDBACK_EXPLICIT_CORRECTION))
    feedback.record(APP, label("o1", "r-1", fpb.FEEDBACK_OUTCOME, label=fpb.Label(class_index=1)))
    feedback.record(APP, label("o2", "r-1", fpb.FEEDBACK_OUTCOME, label=fpb.Label(class_index=2)))
    assert read(feedback, "r-1")["r-1"][:2] == (2, "outcome")
    withdraw = {"label": None, "retracts": "o2"}
    feedback.record(APP, label("o2-retracted", "r-1", fpb.FEEDBACK_RETRACTION, **withdraw))
    assert read(feedback, "r-1")["r-1"][:2] == (1, "outcome")
    withdraw = {"label": None, "retracts": "o1"}
    feedback.record(APP, label("o1-retracted", "r-1", fpb.FEEDBACK_RETRACTION, **withdraw))
    assert read(feedback, "r-1")["r-1"][:2] == (0, "correction")


def test_a_batch_of_the_most_ids_is_read(feedback: FeedbackLog) -> None:
    """A thousand ids (a repeated one answered once) in one call."""
    feedback.record(APP, label("o1", "r-1", fpb.FEEDBACK_OUTCOME))
    asked = ["r-1", *(f"x-{i}" for i in range(MAX_BATCH - 2)), "r-1"]
    assert read(feedback, *asked) == {"r-1": (0, "outcome", DECIDED + 10)}


@pytest.mark.parametrize(
    ("request_ids", "sources", "field", "message"),
    [
        ([], (), "request_ids", "0 request_ids; 1 to 1000"),
        ([f"r-{i}" for i in range(MAX_BATCH + 1)], (), "request_ids", "1001 request_ids"),
        (["r-1", ""], (), "request_ids", "required"),
        (["x" * 300], (), "request_ids", "300 characters"),
        (["r-1"], ("review",), "label_sources", "the queue's own labels"),
        (["r-1"], ("outcome", "review"), "label_sources", "the queue's own labels"),
        (["r-1"], ("truth",), "label_sources", "outcome, correction"),
        (["r-1"], ("outcome", "outcome"), "label_sources", "at most once"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(
    feedback: FeedbackLog,
    request_ids: list[str],
    sources: tuple[str, ...],
    field: str,
    message: str,
) -> None:
    request = fpb.LabelsRequest(request_ids=request_ids, label_sources=sources)
    with pytest.raises(InvalidRequest, match=message) as raised:
        feedback.labels(request)
    assert raised.value.field == field


def test_the_review_queue_and_viewers_may_read_labels_no_one_else() -> None:
    for roles in ({"review"}, {"viewer"}):
        check_method(Principal("p", frozenset(roles)), "Labels")
    for roles in ({"client"}, {"sidecar"}, {"exporter"}):
        with pytest.raises(PermissionDenied):
            check_method(Principal("p", frozenset(roles)), "Labels")


def test_the_store_joins_each_decision_with_its_standing_labels(
    store: FeedbackStore, feedback: FeedbackLog, clock: FakeClock
) -> None:
    """labels_of: recorded decisions that have label events, each with its events in
    order and when each arrived; a retracted one and a non-label event left out."""
    feedback.record(APP, label("o1", "r-1", fpb.FEEDBACK_OUTCOME))
    clock.advance(1)
    feedback.record(REVIEW, label("v1", "r-1", fpb.FEEDBACK_REVIEW))
    feedback.record(APP, label("x", "r-1", fpb.FEEDBACK_RATING, label=None, rating=0.5))
    feedback.record(APP, label("o2", "r-2", fpb.FEEDBACK_OUTCOME))
    feedback.record(APP, label("o2-r", "r-2", fpb.FEEDBACK_RETRACTION, label=None, retracts="o2"))
    found = {item.decision["request_id"]: item for item in store.labels_of(["r-1", "r-2", "r-3"])}
    assert list(found) == ["r-1"]
    assert [e["feedback_id"] for e in found["r-1"].events] == ["o1", "v1"]
    assert found["r-1"].received_at == [DECIDED + 10, DECIDED + 11]


def test_chosen_label_is_the_rule_label_class_and_datasets_use() -> None:
    """The same Labelled gives one class to both; received_at is the chosen event's."""
    labelled = Labelled(
        {"request_id": "r", "logits": [0.0, 1.0], "labels": ["no", "yes"]},
        [
            {"type": "FEEDBACK_REVIEW", "label": {"class_index": 0}},
            {"type": "FEEDBACK_OUTCOME", "label": {"name": "yes"}},
        ],
        [5.0, 6.0],
    )
    chosen = chosen_label(labelled)
    assert chosen is not None
    assert (chosen.class_index, chosen.source, chosen.received_at) == (1, "outcome", 6.0)
    assert label_class(labelled) == 1
    assert chosen_label(labelled, ("review",)) is not None
    assert chosen_label(labelled, ("correction",)) is None
