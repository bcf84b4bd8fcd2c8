"""The feedback store on SQLite and PostgreSQL: append-only, idempotent by
feedback_id, a request's events in the order received, and its schema migrated."""

from __future__ import annotations

import threading

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.records import Outcome, decided, decision_of, event_of, received
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.stores.migrations import MIGRATIONS
from tests.unit.feedback.conftest import OpenStore
from tests.unit.feedback.test_validation import decision, event


def test_a_new_id_is_accepted_a_resend_is_a_duplicate_another_event_a_conflict(
    store: FeedbackStore,
) -> None:
    first = received(event(), "app", 10.0)
    again = received(event(), "app", 11.0)  # same event, later: still the same
    other = received(event(label=fpb.Label(class_index=4)), "app", 12.0)
    assert store.add([first]) == [Outcome.ACCEPTED]
    assert store.add([again, other]) == [Outcome.DUPLICATE, Outcome.CONFLICT]
    (kept,) = store.history("r-1")
    assert kept == first
    assert event_of(kept).label.class_index == 3


def test_one_batch_may_repeat_an_id(store: FeedbackStore) -> None:
    one = received(event(feedback_id="f-9"), "app", 1.0)
    two = received(event(feedback_id="f-9", label=fpb.Label(class_index=1)), "app", 1.0)
    assert store.add([one, one, two]) == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.CONFLICT]


def test_history_is_a_requests_events_in_the_order_received(store: FeedbackStore) -> None:
    for i, (request_id, sender) in enumerate(
        [("r-1", "app"), ("r-2", "app"), ("r-1", "queue"), ("r-1", "sidecar-1")]
    ):
        record = received(event(feedback_id=f"f-{i}", request_id=request_id), sender, 100.0 - i)
        assert store.add([record]) == [Outcome.ACCEPTED]
    history = store.history("r-1")
    assert [e.feedback_id for e in history] == ["f-0", "f-2", "f-3"]
    assert [e.sender for e in history] == ["app", "queue", "sidecar-1"]
    assert store.history("r-404") == []


def test_replicas_sending_one_id_at_once_store_it_once(open_store: OpenStore) -> None:
    replicas = [open_store() for _ in range(4)]
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def send(replica: FeedbackStore) -> None:
        result = replica.add([received(event(feedback_id="race"), "app", 1.0)])
        with lock:
            outcomes.extend(result)

    threads = [threading.Thread(target=send, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([Outcome.ACCEPTED] + [Outcome.DUPLICATE] * 3)
    assert len(replicas[0].history("r-1")) == 1


def test_events_survive_reopening_and_migrations_run_once(open_store: OpenStore) -> None:
    first = open_store()
    assert first.migrated == [m.version for m in MIGRATIONS]  # type: ignore[attr-defined]
    first.add([received(event(), "app", 1.0)])
    first.close()
    again = open_store()
    assert again.migrated == []  # type: ignore[attr-defined]
    assert [e.feedback_id for e in again.history("r-1")] == ["f-1"]


def test_a_decision_is_kept_once_per_request_id(store: FeedbackStore) -> None:
    first = decided(decision(), "sidecar-1", 5.0)
    other = decided(decision(predicted_class=2), "sidecar-2", 6.0)
    assert store.add_decisions([first, first, other]) == [
        Outcome.ACCEPTED,
        Outcome.DUPLICATE,
        Outcome.CONFLICT,
    ]
    assert store.decision("r-1") == first
    assert decision_of(first).policy_revision == 7
    assert store.decision("r-2") is None


def test_events_without_a_decision_are_dead_lettered_then_released(
    store: FeedbackStore,
) -> None:
    """Past the window and unclaimed: dead-lettered once; claimed since: released."""
    for i, (request_id, at) in enumerate([("r-1", 10.0), ("r-2", 10.0), ("r-3", 50.0)]):
        store.add([received(event(feedback_id=f"f-{i}", request_id=request_id), "app", at)])
    store.add_decisions([decided(decision(request_id="r-2"), "sidecar-1", 11.0)])
    assert store.dead_letter_unattributed(before=20.0, reason="late", now=30.0) == 1
    assert store.dead_letter_unattributed(before=20.0, reason="late", now=31.0) == 0
    (letter,) = store.dead_letters(10)
    assert (letter.event.feedback_id, letter.reason, letter.dead_at) == ("f-0", "late", 30.0)
    assert store.replay_dead_letters() == (0, 1)
    store.add_decisions([decided(decision(request_id="r-1"), "sidecar-1", 40.0)])
    assert store.replay_dead_letters() == (1, 0)
    assert store.dead_letters(10) == []
    assert store.dead_letter_unattributed(before=60.0, reason="late", now=70.0) == 1  # r-3


def test_labelled_joins_a_models_decisions_with_their_label_events_before_the_cutoff(
    store: FeedbackStore,
) -> None:
    store.add_decisions(
        [
            decided(decision(request_id="a", decided_at=10.0), "s", 11.0),
            decided(decision(request_id="b", decided_at=20.0), "s", 21.0),
            decided(decision(request_id="c", decided_at=30.0), "s", 31.0),
            decided(decision(request_id="x", model="other", decided_at=10.0), "s", 11.0),
        ]
    )
    labels = [
        ("a", fpb.FEEDBACK_OUTCOME, 12.0),
        ("a", fpb.FEEDBACK_REVIEW, 13.0),
        ("b", fpb.FEEDBACK_OUTCOME, 50.0),  # after the cutoff: not seen
        ("c", fpb.FEEDBACK_EXPLICIT_CORRECTION, 32.0),
        ("x", fpb.FEEDBACK_OUTCOME, 12.0),  # another model's
    ]
    for i, (request_id, kind, at) in enumerate(labels):
        labelled = event(feedback_id=f"f{i}", request_id=request_id, type=kind)
        store.add([received(labelled, "app", at)])
    rating = event(feedback_id="r", request_id="a", type=fpb.FEEDBACK_RATING, label=None)
    rating.rating = 0.5
    store.add([received(rating, "app", 14.0)])  # not a label: left out

    found = {item.decision["request_id"]: item for item in store.labelled("digits", 0.0, 40.0)}
    assert sorted(found) == ["a", "c"]
    assert [e["type"] for e in found["a"].events] == ["FEEDBACK_OUTCOME", "FEEDBACK_REVIEW"]
    assert found["a"].decision["policy_revision"] == "7"
    assert store.labelled("digits", 25.0, 40.0) == [found["c"]]
    recorded = {item.decision["request_id"]: item for item in store.recorded("digits", 0.0, 40.0)}
    assert sorted(recorded) == ["a", "b", "c"]  # b: its label came after the cutoff
    assert (recorded["a"], recorded["c"]) == (found["a"], found["c"])
    assert recorded["b"].events == []
