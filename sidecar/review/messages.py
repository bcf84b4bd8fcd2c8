"""Review queue items and requests to and from hitl.v1 messages. An enum number the
contract does not define is kept visible (``tier`` "7") for validation to refuse by
name, never a crash in conversion."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from sidecar.errors import InvalidRequest
from sidecar.escalation.messages import from_message, to_message
from sidecar.escalation.record import Escalation
from sidecar.review.item import Agreement, ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.queue import SubmitStatus, Submitted
from sidecar.review.resolution import ReviewerVerdict

_ESCALATION_ENUMS: tuple[tuple[str, Any], ...] = (
    ("tier", dpb.Tier),
    ("reason", dpb.Reason),
    ("input_kind", dpb.InputKind),
)


def to_escalation(message: rpb.Escalation) -> Escalation:
    unknown: dict[str, Any] = {
        name: str(getattr(message, name))
        for name, enum in _ESCALATION_ENUMS
        if getattr(message, name) not in enum.values()
    }
    if not unknown:
        return from_message(message)
    known = rpb.Escalation()
    known.CopyFrom(message)
    for name in unknown:
        known.ClearField(name)  # type: ignore[arg-type]  # one of the enum fields above
    return replace(from_message(known), **unknown)


def item_message(item: ReviewItem, answers: bool = False) -> rpb.ReviewItem:
    """The item on the wire; its answers only when ``answers`` (the caller may see
    other reviewers' answers: ``access.sees_answers``)."""
    message = rpb.ReviewItem(
        escalation=to_message(item.escalation),
        state=rpb.ItemState.Value(f"ITEM_STATE_{item.state.value}"),
        priority=item.priority,
        due_at=item.due_at,
        escalation_level=item.escalation_level,
        received_at=item.received_at,
        claimed_by=item.claimed_by,
        lease_expires_at=item.lease_expires_at,
        reviews_required=item.reviews_required,
        consensus=item.consensus.value,
        answered=item.answered,
    )
    if (r := item.resolution) is not None:
        message.resolution.CopyFrom(_resolution_message(r))
    if answers:
        message.answers.extend(_resolution_message(a) for a in item.answers)
    return message


def _resolution_message(r: Resolution) -> rpb.Resolution:
    fields = r.to_dict()
    fields["verdict"] = rpb.Verdict.Value(f"VERDICT_{fields['verdict']}")
    return rpb.Resolution(**fields)


def _resolution(r: rpb.Resolution) -> Resolution:
    fields = {name: getattr(r, name) for name in Resolution.__dataclass_fields__}
    fields["verdict"] = Verdict(rpb.Verdict.Name(r.verdict).removeprefix("VERDICT_"))
    return Resolution(**fields)


def item_from_message(message: rpb.ReviewItem) -> ReviewItem:
    """The inverse of item_message (claimed_at is not on the wire: 0)."""
    resolution = None
    if message.HasField("resolution"):
        resolution = _resolution(message.resolution)
    return ReviewItem(
        escalation=from_message(message.escalation),
        state=ItemState(rpb.ItemState.Name(message.state).removeprefix("ITEM_STATE_")),
        priority=message.priority,
        due_at=message.due_at,
        escalation_level=message.escalation_level,
        received_at=message.received_at,
        claimed_by=message.claimed_by,
        lease_expires_at=message.lease_expires_at,
        resolution=resolution,
        # A message from a queue older than consensus says 0: one review.
        reviews_required=max(1, message.reviews_required),
        consensus=Agreement(message.consensus or Agreement.ALL.value),
        answered=message.answered,
        answers=tuple(_resolution(a) for a in message.answers),
    )


def submit_result(submitted: Submitted) -> rpb.SubmitResult:
    return rpb.SubmitResult(
        escalation_id=submitted.escalation_id,
        status=rpb.SubmitResult.Status.Value(submitted.status.value),
        message=submitted.message,
    )


def submitted_from_message(message: rpb.SubmitResult) -> Submitted:
    status = SubmitStatus(rpb.SubmitResult.Status.Name(message.status))
    return Submitted(message.escalation_id, status, message.message)


def state_filter(value: int) -> ItemState | None:
    if value == rpb.ITEM_STATE_UNSPECIFIED:
        return None
    if value not in rpb.ItemState.values():
        raise InvalidRequest("state", f"unknown value {value}")
    return ItemState(rpb.ItemState.Name(value).removeprefix("ITEM_STATE_"))  # type: ignore[arg-type]


def tier_filter(value: int) -> str:
    if value == dpb.TIER_UNSPECIFIED:
        return ""
    if value not in dpb.Tier.values():
        raise InvalidRequest("tier", f"unknown value {value}")
    return dpb.Tier.Name(value).removeprefix("TIER_")  # type: ignore[arg-type]


def reviewer_verdict(
    message: rpb.ResolveRequest, reviewer: str, acted_by: str = "", lead: bool = False
) -> ReviewerVerdict:
    """The verdict message asks for, given for reviewer (who the caller's credential
    says it is, or acts for: ``access.reviewer_for``); ``lead``: the caller is a lead (its own
    verdict may resolve an item in adjudication)."""
    if message.verdict == rpb.VERDICT_UNSPECIFIED:
        verdict = None
    elif message.verdict in rpb.Verdict.values():
        verdict = Verdict(rpb.Verdict.Name(message.verdict).removeprefix("VERDICT_"))
    else:
        raise InvalidRequest("verdict", f"unknown value {message.verdict}")
    return ReviewerVerdict(
        escalation_id=message.escalation_id,
        reviewer=reviewer,
        verdict=verdict,
        corrected_class=message.corrected_class if message.HasField("corrected_class") else None,
        corrected_label=message.corrected_label,
        rationale=message.rationale,
        time_to_label_seconds=message.time_to_label_seconds,
        acted_by=acted_by,
        evidence=message.evidence,
        lead=lead and not acted_by,
    )
