"""The bridge's store, on SQLite and on PostgreSQL: one task per escalation id,
resolutions recorded once and corrected by their annotation's update, refusals
counted once, deadlines raised."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.labelstudio.store import BridgeStore, Recorded, Registered, Task
from sidecar.review.item import ItemState, Resolution, Verdict
from sidecar.review.sla import parse_sla
from tests.escalations import escalation
from tests.postgres import opened_stores


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], BridgeStore]]:
    with opened_stores(request.param, tmp_path / "bridge.db", BridgeStore) as open_one:
        yield open_one


@pytest.fixture
def store(open_store: Callable[[], BridgeStore]) -> BridgeStore:
    return open_store()


def task(task_id: int = 7, escalation_id: str = "e1", received_at: float = 100.0) -> Task:
    return Task(
        escalation(escalation_id, labels=["a", "b", "c"]),
        task_id,
        3,
        {"text": "x", "escalation_id": escalation_id},
        received_at,
        received_at + 60.0,
    )


def resolution(
    label: str = "c", verdict: Verdict = Verdict.OVERRIDE, at: float = 150.0
) -> Resolution:
    return Resolution("bob", verdict, "abc".index(label), label, "", 12.5, at)


def test_a_second_task_of_an_escalation_is_a_duplicate(store: BridgeStore) -> None:
    """An escalation's first task is tracked, the same again known, another a duplicate."""
    assert store.register(task(7)) is Registered.NEW
    assert store.register(task(7)) is Registered.KNOWN
    assert store.register(task(8)) is Registered.DUPLICATE
    assert store.task(8) is None


def test_replicas_sharing_the_database_track_one_task_per_escalation(
    open_store: Callable[[], BridgeStore],
) -> None:
    """Two bridges on one database agree on which task holds an escalation."""
    first, second = open_store(), open_store()
    assert first.register(task(7)) is Registered.NEW
    assert second.register(task(9)) is Registered.DUPLICATE


def test_the_first_annotation_resolves_and_an_update_replaces_it_until_sent(
    store: BridgeStore,
) -> None:
    """The first annotation resolves the task; its update replaces it in place until it
    is sent; another annotation changes nothing, before or after sending."""
    store.register(task(7))
    assert store.record(7, 1, resolution("c"), 1.0) == (Recorded.RESOLVED, 1)
    assert store.record(7, 1, resolution("c"), 2.0) == (Recorded.UNCHANGED, 1)
    assert store.record(7, 1, resolution("a"), 3.0) == (Recorded.UPDATED, 1)
    assert store.record(7, 2, resolution("b", Verdict.ACCEPT), 4.0) == (Recorded.SETTLED, 1)
    ((item, number),) = store.unforwarded_numbered(10, 200.0)
    assert number == 1
    assert item.state is ItemState.RESOLVED
    assert item.resolution is not None
    assert item.resolution.label == "a"
    assert item.claimed_at == pytest.approx(150.0 - 12.5)
    assert store.unretracted(10) == []  # replaced before it was sent: nothing to retract
    store.mark_forwarded([(item, number)], 200.0)
    assert store.record(7, 2, resolution("b", Verdict.ACCEPT), 5.0) == (Recorded.SETTLED, 1)
    assert store.record(7, 1, resolution("a"), 6.0) == (Recorded.UNCHANGED, 1)
    assert store.unforwarded_numbered(10, 201.0) == []
    assert store.unretracted(10) == []


def test_an_update_after_its_resolution_was_sent_corrects_it(store: BridgeStore) -> None:
    """The sent resolution's annotation changes: resolution 2 is recorded, held back
    until the retraction of resolution 1 is marked sent, then sent itself."""
    store.register(task(7))
    store.record(7, 1, resolution("c"), 1.0)
    store.mark_forwarded(store.unforwarded_numbered(10, 200.0), 200.0)
    assert store.record(7, 1, resolution("a"), 300.0) == (Recorded.CORRECTED, 2)
    ((e, withdrawn),) = store.unretracted(10)
    assert e.escalation_id == "e1"
    assert (withdrawn.escalation_id, withdrawn.number) == ("e1", 1)
    assert (withdrawn.resolution.label, withdrawn.forwarded_at) == ("c", 200.0)
    assert (withdrawn.reverted_by, withdrawn.reverted_at) == ("bob", 300.0)
    assert withdrawn.reason == "annotation 1 updated in Label Studio"
    assert store.unforwarded_numbered(10, 301.0) == []  # the retraction goes first
    store.mark_retracted([("e1", 1)], 302.0)
    assert store.unretracted(10) == []
    ((item, number),) = store.unforwarded_numbered(10, 303.0)
    assert item.resolution is not None
    assert (item.resolution.label, item.resolution.verdict, number) == ("a", Verdict.OVERRIDE, 2)
    store.mark_forwarded([(item, number)], 304.0)
    assert store.unforwarded_numbered(10, 305.0) == []
    stored = store.task(7)
    assert stored is not None
    assert stored.resolution == item.resolution


def test_an_update_of_a_correction_replaces_it_until_sent_then_corrects_it_again(
    store: BridgeStore,
) -> None:
    """An unsent correction is replaced in place (its retraction still due once); once
    sent, the next update makes resolution 3, retracting resolution 2."""
    store.register(task(7))
    store.record(7, 1, resolution("c"), 1.0)
    store.mark_forwarded(store.unforwarded_numbered(10, 200.0), 200.0)
    assert store.record(7, 1, resolution("a"), 300.0) == (Recorded.CORRECTED, 2)
    assert store.record(7, 1, resolution("b", Verdict.ACCEPT), 301.0) == (Recorded.UPDATED, 2)
    assert [c.number for _, c in store.unretracted(10)] == [1]
    store.mark_retracted([("e1", 1)], 302.0)
    store.mark_retracted([("e1", 1)], 303.0)  # a batch marked twice: no harm
    ((item, number),) = store.unforwarded_numbered(10, 304.0)
    assert item.resolution is not None
    assert (item.resolution.label, number) == ("b", 2)
    store.mark_forwarded([(item, number)], 305.0)
    assert store.record(7, 1, resolution("c"), 400.0) == (Recorded.CORRECTED, 3)
    ((_, withdrawn),) = store.unretracted(10)
    assert (withdrawn.number, withdrawn.resolution.label) == (2, "b")
    store.mark_retracted([("e1", 2)], 401.0)
    ((item, number),) = store.unforwarded_numbered(10, 402.0)
    assert item.resolution is not None
    assert (item.resolution.label, number) == ("c", 3)


def test_a_stale_mark_never_marks_a_later_resolution(store: BridgeStore) -> None:
    """A replica marking resolution 1 sent after another sent it and the annotation was
    corrected back to the same label marks nothing: resolution 2 stays unsent."""
    store.register(task(7))
    store.record(7, 1, resolution("c"), 1.0)
    read = store.unforwarded_numbered(10, 200.0)
    store.mark_forwarded(read, 200.0)
    store.record(7, 1, resolution("a"), 300.0)
    store.record(7, 1, resolution("c"), 301.0)  # back to the first label, still unsent
    store.mark_retracted([("e1", 1)], 302.0)
    store.mark_forwarded(read, 303.0)  # the other replica's late mark of resolution 1
    ((item, number),) = store.unforwarded_numbered(10, 304.0)
    assert item.resolution is not None
    assert (item.resolution.label, number) == ("c", 2)


def test_an_update_while_its_resolution_was_sent_stays_unsent(store: BridgeStore) -> None:
    """The annotation changed between reading its resolution and marking it sent: the
    mark misses, and the update is sent next; a task no longer tracked records nothing."""
    store.register(task(7))
    assert store.record(7, 1, resolution("c"), 1.0) == (Recorded.RESOLVED, 1)
    read = store.unforwarded_numbered(10, 200.0)
    assert store.record(7, 1, resolution("a"), 2.0) == (Recorded.UPDATED, 1)
    store.mark_forwarded(read, 200.0)
    ((again, number),) = store.unforwarded_numbered(10, 201.0)
    assert again.resolution is not None
    assert (again.resolution.label, number) == ("a", 1)
    assert store.unretracted(10) == []
    assert store.record(99, 1, resolution("a"), 3.0) == (Recorded.SETTLED, 0)


def test_a_refusal_is_kept_once(store: BridgeStore) -> None:
    """The same annotation refused for the same reason again is not new."""
    assert store.refuse(5, "unmapped_reviewer", "eve", 1.0)
    assert not store.refuse(5, "unmapped_reviewer", "eve", 2.0)
    assert store.refuse(5, "label_outside_list", "zebra", 2.0)


def test_overdue_tasks_are_raised_once_per_deadline(store: BridgeStore) -> None:
    """A task past its deadline goes up a level with a new deadline; Label Studio is
    due the new level until it is marked synced; resolved tasks are never raised."""
    sla = parse_sla("HUMAN_ASSISTED=60", "sla")
    store.register(task(7, "e1"))
    store.register(task(8, "e2"))
    store.record(8, 1, resolution(), 1.0)
    assert [t.task_id for t in store.unsynced(10)] == [7]  # its first deadline, to write
    store.mark_synced(7, 0)
    (raised,) = store.raise_overdue(sla, 170.0)
    assert (raised.task_id, raised.escalation_level, raised.due_at) == (7, 1, 230.0)
    assert store.raise_overdue(sla, 171.0) == []
    assert [t.escalation_level for t in store.unsynced(10)] == [1]
    assert store.counts() == {"HUMAN_ASSISTED": 1}


def test_unchecked_tasks_come_longest_unchecked_first(store: BridgeStore) -> None:
    """Each poll reads the tasks it read least recently."""
    for number in (7, 8, 9):
        store.register(task(number, f"e{number}"))
    assert [t.task_id for t in store.unchecked(2, 10.0)] == [7, 8]
    assert [t.task_id for t in store.unchecked(2, 11.0)] == [9, 7]


def test_the_last_task_seen_only_moves_forward(store: BridgeStore) -> None:
    store.set_last_task_id(3, 10)
    store.set_last_task_id(3, 4)
    assert store.last_task_id(3) == 10
    assert store.last_task_id(4) == 0


def test_a_task_deleted_in_label_studio_is_forgotten_unless_resolved(store: BridgeStore) -> None:
    store.register(task(7, "e1"))
    store.register(task(8, "e2"))
    store.record(8, 1, resolution(), 1.0)
    assert store.forget(7)
    assert not store.forget(8)
    assert store.task(7) is None
    assert store.task(8) is not None
