"""The feedback loop's latency, stage by stage, in seconds:

    delivered   an escalation made -> the review queue received it        (REVIEW)
    claimed     the queue received it -> a reviewer claimed it             (REVIEW)
    resolved    claimed -> resolved                                        (REVIEW)
    joined      a label happened (resolved, observed) -> the log holds it with
                its decision: every dataset built or exported from then on has it
    end_to_end  the decision -> joined

A REVIEW event carries the queue's times in its user_context (``escalated_at``,
``received_at``, ``claimed_at``, unix seconds, as the queue's outbox writes them);
its ``occurred_at`` is when it was resolved. Times come from different machines'
clocks: a stage that reads negative counts as 0. A time that is missing or not a
number leaves out the stages it bounds."""

from __future__ import annotations

import math
from collections.abc import Mapping

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb

STAGES = ("delivered", "claimed", "resolved", "joined", "end_to_end")
# Histogram buckets, seconds: from the under-a-second join to a week's review.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400,
           28800, 86400, 172800, 604800)  # fmt: skip
# The queue's times in a REVIEW event's user_context.
REVIEW_TIMES = ("escalated_at", "received_at", "claimed_at")

Stage = tuple[str, float]


def review_stages(event: fpb.FeedbackEvent) -> list[Stage]:
    """A REVIEW event's delivered, claimed and resolved stages (those its times allow)."""
    times = [_time(event.user_context, key) for key in REVIEW_TIMES]
    times.append(event.occurred_at or None)
    spans = zip(("delivered", "claimed", "resolved"), times, times[1:], strict=False)
    return [
        (stage, max(0.0, end - start))
        for stage, start, end in spans
        if start is not None and end is not None
    ]


def join_stages(
    occurred_at: float, received_at: float, decided_at: float, joined_at: float
) -> list[Stage]:
    """A label's joined and end_to_end stages: it happened at occurred_at (0: when it
    was received), about a decision made at decided_at, and met it at joined_at."""
    stages = [("joined", max(0.0, joined_at - (occurred_at or received_at)))]
    if decided_at:
        stages.append(("end_to_end", max(0.0, joined_at - decided_at)))
    return stages


def _time(context: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(context[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None
