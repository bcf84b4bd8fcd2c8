"""Review items and requests to and from hitl.v1 messages."""

from __future__ import annotations

import pytest

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from sidecar.errors import InvalidRequest
from sidecar.escalation.messages import to_message
from sidecar.review import messages
from sidecar.review.item import ItemState, Resolution, ReviewItem, Verdict
from tests.escalations import escalation


def test_review_item_round_trips() -> None:
    """item_from_message(item_message(item)) is the item (claimed_at is not on the wire)."""
    item = ReviewItem(
        escalation=escalation("e1", logits=[0.5, 2.0, -1.0]),
        state=ItemState.RESOLVED,
        priority=1,
        due_at=1000.0,
        escalation_level=2,
        received_at=900.0,
        claimed_by="alice",
        lease_expires_at=1300.0,
        resolution=Resolution("alice", Verdict.OVERRIDE, 2, "c", "why", 12.5, 1100.0),
    )
    assert messages.item_from_message(messages.item_message(item)) == item


def test_unknown_enum_numbers_stay_visible() -> None:
    """A tier, reason or input kind the contract does not define is kept as its number."""
    message = to_message(escalation("e1"))
    message.tier = 9  # type: ignore[assignment]
    message.input_kind = 7  # type: ignore[assignment]
    converted = messages.to_escalation(message)
    assert (converted.tier, converted.input_kind, converted.reason) == ("9", "7", "THRESHOLD")


@pytest.mark.parametrize(
    ("convert", "value", "field"),
    [(messages.state_filter, 9, "state"), (messages.tier_filter, 9, "tier")],
)
def test_unknown_filters_name_their_field(convert: object, value: int, field: str) -> None:
    """An undefined state or tier filter is InvalidRequest naming the field."""
    with pytest.raises(InvalidRequest) as raised:
        convert(value)  # type: ignore[operator]
    assert raised.value.field == field


def test_resolve_request_keeps_an_explicit_class_zero() -> None:
    """corrected_class is optional on the wire: 0 given is 0, not absent."""
    given = messages.reviewer_verdict(
        rpb.ResolveRequest(escalation_id="e1", verdict=rpb.VERDICT_OVERRIDE, corrected_class=0),
        "a",
    )
    absent = messages.reviewer_verdict(rpb.ResolveRequest(escalation_id="e1"), "a")
    assert (given.corrected_class, given.verdict) == (0, Verdict.OVERRIDE)
    assert (absent.corrected_class, absent.verdict) == (None, None)
