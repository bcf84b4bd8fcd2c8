"""The loop's stages: a review's three in the queue from the times it carries, a
label's join and the whole loop from its decision; clocks that disagree never make a
stage negative, and a time that is missing leaves out only the stages it bounds."""

from __future__ import annotations

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.latency import join_stages, review_stages


def review(**times: str) -> fpb.FeedbackEvent:
    """A REVIEW resolved at 990 with the queue's times given."""
    return fpb.FeedbackEvent(type=fpb.FEEDBACK_REVIEW, occurred_at=990.0, user_context=times)


def test_a_reviews_stages_in_the_queue() -> None:
    event = review(escalated_at="900", received_at="901.5", claimed_at="960")
    assert review_stages(event) == [("delivered", 1.5), ("claimed", 58.5), ("resolved", 30.0)]


@pytest.mark.parametrize(
    ("times", "stages"),
    [
        ({"escalated_at": "900", "received_at": "901"}, ["delivered"]),  # never claimed
        ({"received_at": "901", "claimed_at": "960"}, ["claimed", "resolved"]),
        ({"escalated_at": "x", "received_at": "nan", "claimed_at": "960"}, ["resolved"]),
        ({}, []),
    ],
)
def test_a_missing_or_unreadable_time_leaves_out_the_stages_it_bounds(
    times: dict[str, str], stages: list[str]
) -> None:
    assert [stage for stage, _ in review_stages(review(**times))] == stages


def test_a_clock_behind_another_never_makes_a_stage_negative() -> None:
    event = review(escalated_at="905", received_at="901", claimed_at="960")
    assert review_stages(event)[0] == ("delivered", 0.0)
    assert join_stages(1010.0, 1000.0, 1020.0, 1005.0) == [("joined", 0.0), ("end_to_end", 0.0)]


def test_a_labels_join_and_the_whole_loop() -> None:
    assert join_stages(990.0, 995.0, 899.5, 1005.0) == [("joined", 15.0), ("end_to_end", 105.5)]
    # occurred_at 0: it happened when it was received
    assert join_stages(0.0, 995.0, 899.5, 1005.0) == [("joined", 10.0), ("end_to_end", 105.5)]
    assert join_stages(0.0, 995.0, 0.0, 995.0) == [("joined", 0.0)]  # no decision time
