"""The bridge's resolutions to the feedback service, on SQLite and PostgreSQL: an
annotation's update after its resolution was sent goes as the RETRACTION of the sent
one, then the new resolution naming the one it supersedes; nothing is lost while the
service is unreachable. Against a real gRPC server in this process that records what
it is sent (the review queue's outbox tests' ``Recording``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sidecar.clock import FakeClock
from sidecar.labelstudio.outbox import ResolutionOutbox
from sidecar.labelstudio.store import BridgeStore, Recorded
from sidecar.review.item import Verdict
from sidecar.settings import ClientCredentials
from tests.unit.labelstudio.test_store import open_store, resolution, store, task
from tests.unit.review.test_bulk_feedback import sent
from tests.unit.review.test_outbox import Recording, service

# The fixtures, shared with the store's tests and the review queue's outbox tests.
__all__ = ["open_store", "service", "store"]


@pytest.fixture
def outbox(
    service: tuple[Recording, str], store: BridgeStore
) -> Iterator[Callable[..., ResolutionOutbox]]:
    """An outbox to the recording service, or (given an address) to another."""
    made: list[ResolutionOutbox] = []

    def to(address: str = service[1]) -> ResolutionOutbox:
        made.append(ResolutionOutbox(store, FakeClock(), address, ClientCredentials("t0ken")))
        return made[-1]

    yield to
    for each in made:
        each.close()


def test_a_correction_retracts_the_sent_label_then_sends_the_new_one(
    store: BridgeStore, service: tuple[Recording, str], outbox: Callable[..., ResolutionOutbox]
) -> None:
    """Resolve, send, correct, send, correct, send: each resolution and each retraction
    once, in that order, all with the bridge's source; a send with nothing new sends
    nothing."""
    recording, _ = service
    store.register(task(7))
    store.record(7, 1, resolution("c"), 1.0)
    sender = outbox()
    assert sender.send() == 1
    assert store.record(7, 1, resolution("a"), 2.0) == (Recorded.CORRECTED, 2)
    assert sender.send() == 2
    assert store.record(7, 1, resolution("b", Verdict.ACCEPT), 3.0) == (Recorded.CORRECTED, 3)
    assert sender.send() == 2
    assert sender.send() == 0
    assert sent(recording) == [
        ("review-e1", "FEEDBACK_REVIEW", ""),
        ("review-e1-retracted", "FEEDBACK_RETRACTION", "review-e1"),
        ("review-e1-2", "FEEDBACK_REVIEW", "review-e1"),
        ("review-e1-2-retracted", "FEEDBACK_RETRACTION", "review-e1-2"),
        ("review-e1-3", "FEEDBACK_REVIEW", "review-e1-2"),
    ]
    assert {e.source for e in recording.events} == {"labelstudio"}
    assert [e.label.name for e in recording.events[::2]] == ["c", "a", "b"]
    retraction = recording.events[3]
    assert (retraction.request_id, retraction.user_context["reverted_by"]) == ("req-e1", "bob")
    assert retraction.user_context["reason"] == "annotation 1 updated in Label Studio"
    assert retraction.occurred_at == 3.0


def test_a_correction_waits_in_the_store_while_the_service_is_unreachable(
    store: BridgeStore, service: tuple[Recording, str], outbox: Callable[..., ResolutionOutbox]
) -> None:
    """The service down: neither the retraction nor the new resolution is marked sent;
    back up, both go, the retraction first."""
    recording, _ = service
    store.register(task(7))
    store.record(7, 1, resolution("c"), 1.0)
    assert outbox().send() == 1
    store.record(7, 1, resolution("a"), 2.0)
    assert outbox("127.0.0.1:1").send() == 0
    assert [c.number for _, c in store.unretracted(10)] == [1]
    assert outbox().send() == 2
    assert [feedback_id for feedback_id, _, _ in sent(recording)] == [
        "review-e1",
        "review-e1-retracted",
        "review-e1-2",
    ]
    assert store.unretracted(10) == []
    assert store.unforwarded_numbered(10, 0.0) == []
