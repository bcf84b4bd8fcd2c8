"""Review items as JSON objects: what the reviewer CLI prints, and the labelled-data
export line. Pure.

An export line is the escalation's fields (the decision context, ``logits`` as
sent and ``input_kind``, ``domain``) joined with its resolution: ``label`` (the
true class index), ``label_name``, ``verdict``, ``reviewer`` (and ``acted_by``, a
lead who recorded the verdict for them), ``rationale``,
``time_to_label_seconds``, ``resolved_at``, plus ``received_at`` and
``escalation_level``. Probabilities are written under ``probabilities`` instead of
``logits``, so ``calibrators.data`` (``hitl calibrate fit --data FILE.jsonl``) reads
the file as it is. Non-finite numbers (a fallback's confidence) are written null."""

from __future__ import annotations

import math
from typing import Any

from sidecar.review.item import UNKNOWN_CLASS, ReviewItem


def item_record(item: ReviewItem) -> dict[str, Any]:
    r = item.resolution
    return {
        "escalation_id": item.escalation_id,
        "state": item.state.value,
        "priority": item.priority,
        "due_at": item.due_at,
        "escalation_level": item.escalation_level,
        "received_at": item.received_at,
        "claimed_by": item.claimed_by,
        "lease_expires_at": item.lease_expires_at,
        "escalation": _finite(item.escalation.to_dict()),
        "resolution": None if r is None else r.to_dict(),
    }


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
        received_at=item.received_at,
        escalation_level=item.escalation_level,
    )
    return record


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }
