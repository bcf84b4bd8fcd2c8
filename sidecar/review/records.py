"""Review items as JSON objects: what the reviewer CLI prints, and the labelled-data
export line. Pure.

An export line is the escalation's fields (the decision context, ``logits`` as
sent and ``input_kind``, ``domain``) joined with its resolution: ``label`` (the
true class index), ``label_name``, ``verdict``, ``reviewer`` (and ``acted_by``, a
lead who recorded the verdict for them), ``rationale``,
``time_to_label_seconds``, ``resolved_at``, ``evidence`` (what the reviewer was
shown, a JSON object as text, or empty), plus ``received_at`` and
``escalation_level``; of an item that needed several reviews also ``agreement``
("2 of 3", or "adjudicated (...)") and ``answers`` (each reviewer's answer, in the
order given; the final label is the agreed class or the lead's), with
``reviews_required``. Probabilities are written under ``probabilities`` instead of
``logits``, so ``calibrators.data`` (``hitl calibrate fit --data FILE.jsonl``) reads
the file as it is. Non-finite numbers (a fallback's confidence) are written null."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sidecar.review.item import UNKNOWN_CLASS, Resolution, ReviewItem


def item_record(item: ReviewItem, now: float, answers: bool = False) -> dict[str, Any]:
    """What a reviewer reads: times as ISO 8601 (UTC) with the time left until the
    deadline (negative: overdue), and logits as the float32 values they were, without
    the digits a double adds to them. The other reviewers' answers only when
    ``answers`` (``access.sees_answers``); their count always."""
    r = item.resolution
    escalation = _finite(item.escalation.to_dict())
    escalation["logits"] = [float(f"{x:.7g}") for x in item.escalation.logits]
    return {
        "escalation_id": item.escalation_id,
        "state": item.state.value,
        "priority": item.priority,
        "due": _iso(item.due_at),
        "time_left_seconds": round(item.due_at - now, 1),
        "escalation_level": item.escalation_level,
        "received": _iso(item.received_at),
        "claimed_by": item.claimed_by,
        "lease_expires": _iso(item.lease_expires_at) if item.lease_expires_at else None,
        "escalation": escalation,
        "resolution": None if r is None else r.to_dict(),
        "reviews_required": item.reviews_required,
        "answered": item.answered,
        **({"answers": [a.to_dict() for a in item.answers]} if answers else {}),
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def unusable(item: ReviewItem) -> str:
    """Why a resolved item cannot be a calibration example ('' when it can)."""
    if item.resolution is None:
        return "unresolved"
    if item.resolution.label_class == UNKNOWN_CLASS:
        return "labelled by name only (no class index)"
    if not item.escalation.logits:
        return "no logits"
    return ""


def export_record(item: ReviewItem) -> dict[str, Any]:
    """The export line of a resolved item (ValueError for an unresolved one)."""
    r = item.resolution
    if r is None:
        raise ValueError(f"escalation_id {item.escalation_id!r} is not resolved")
    record = _finite(item.escalation.to_dict())
    if item.escalation.input_kind == "PROBABILITIES":
        record["probabilities"] = record.pop("logits")
    record.update(
        label=r.label_class,
        label_name=r.label,
        verdict=r.verdict.value,
        reviewer=r.reviewer,
        acted_by=r.acted_by,
        rationale=r.rationale,
        time_to_label_seconds=r.time_to_label_seconds,
        resolved_at=r.resolved_at,
        evidence=r.evidence,
        received_at=item.received_at,
        escalation_level=item.escalation_level,
    )
    if item.reviews_required > 1:
        record.update(
            reviews_required=item.reviews_required,
            agreement=r.agreement,
            answers=[_answer(a) for a in item.answers],
        )
    return record


def _answer(a: Resolution) -> dict[str, Any]:
    answer = a.to_dict()
    answer.pop("agreement")
    answer["answered_at"] = answer.pop("resolved_at")
    return answer


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }
