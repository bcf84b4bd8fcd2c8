"""Rate limits per principal: a token bucket each, refilled with time; a call the
bucket cannot cover is refused whole and stores nothing."""

from __future__ import annotations

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.clock import FakeClock
from sidecar.errors import RateLimited
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.limits import RateLimits
from sidecar.feedback.store import FeedbackStore
from tests.unit.feedback.conftest import APP, SIDECAR
from tests.unit.feedback.test_validation import event


def test_each_principal_has_its_own_bucket_refilled_with_time() -> None:
    clock = FakeClock(0.0)
    limits = RateLimits(rate=10.0, burst=20.0, clock=clock)
    limits.take("a", 20)
    with pytest.raises(
        RateLimited, match=r"a sent more than its 10 events/s: 1 now would need 0\.10 s"
    ):
        limits.take("a", 1)
    limits.take("b", 20)  # another principal's bucket is full
    clock.advance(0.5)
    limits.take("a", 5)
    with pytest.raises(RateLimited):
        limits.take("a", 1)
    clock.advance(100.0)  # refilled to the burst, no further
    limits.take("a", 20)
    with pytest.raises(RateLimited):
        limits.take("a", 1)


def test_a_batch_the_bucket_cannot_cover_is_refused_whole(store: FeedbackStore) -> None:
    clock = FakeClock(0.0)
    feedback = FeedbackLog(store, clock, limits=RateLimits(2.0, 3.0, clock))
    events = [event(feedback_id=f"f{i}") for i in range(4)]
    with pytest.raises(RateLimited):
        feedback.record_batch(APP, events)
    assert feedback.history("r-1").events == []
    assert [r.status for r in feedback.record_batch(APP, events[:3])] == ["ACCEPTED"] * 3
    with pytest.raises(RateLimited):
        feedback.record(APP, events[3])
    feedback.record(SIDECAR, events[3])  # its own bucket
    clock.advance(1.0)
    with pytest.raises(RateLimited):
        feedback.record_decisions(APP, [fpb.DecisionRecord()] * 3)
