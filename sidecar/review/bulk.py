"""A lead's bulk accept and the revert of one resolution: which items a bulk accept
may take and the resolution it gives each, and what a revert records. Pure, no I/O.

A bulk accept resolves each item it takes as its own ACCEPT by the lead, one
resolution per item, so each stays auditable and can be reverted alone. The batch id
goes in the resolution's rationale ("bulk accept <batch id>: ...") and in its
evidence JSON (``{"bulk_accept": {"batch_id": ..., ...}}``); there is no column."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from sidecar.errors import InvalidRequest
from sidecar.review.errors import ItemConflict
from sidecar.review.item import ItemState, Resolution, ReviewItem, Verdict

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class BulkFilter:
    """What a bulk accept takes: open items of model (and rule_id, tier when given)
    whose calibrated confidence is at least min_confidence; when only is given, only
    those escalation ids among them (what a preview showed)."""

    model: str
    min_confidence: float
    rule_id: str = ""
    tier: str = ""
    limit: int = DEFAULT_LIMIT
    only: tuple[str, ...] = ()

    def check(self) -> None:
        """InvalidRequest naming the field unless the filter can be run."""
        if not self.model:
            raise InvalidRequest("model", "a bulk accept needs the model")
        if not (math.isfinite(self.min_confidence) and 0.0 <= self.min_confidence <= 1.0):
            raise InvalidRequest("min_confidence", f"{self.min_confidence} is not in [0, 1]")
        if not 0 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(
                "limit", f"{self.limit} is not in [0, {MAX_LIMIT}] (0: {DEFAULT_LIMIT})"
            )
        if len(self.only) > MAX_LIMIT:
            raise InvalidRequest("only", f"names {len(self.only)} items, over {MAX_LIMIT}")

    @property
    def count(self) -> int:
        return self.limit or DEFAULT_LIMIT

    def takes(self, item: ReviewItem) -> bool:
        """Whether item is one to accept: OPEN (not claimed under a live lease, not in
        adjudication), needing one review, with a prediction, matching the filter."""
        e = item.escalation
        return (
            item.state is ItemState.OPEN
            and item.resolution is None
            and item.reviews_required <= 1
            and e.predicted_class >= 0
            and e.model == self.model
            and (not self.rule_id or e.rule_id == self.rule_id)
            and (not self.tier or e.tier == self.tier)
            and math.isfinite(e.calibrated_confidence)
            and e.calibrated_confidence >= self.min_confidence
            and (not self.only or item.escalation_id in self.only)
        )


def bulk_resolution(
    item: ReviewItem, lead: str, batch_id: str, wanted: BulkFilter, now: float
) -> Resolution:
    """The lead's ACCEPT of item in batch batch_id; ItemConflict when the item is no
    longer one the batch takes (claimed, answered or resolved since it was listed)."""
    if not wanted.takes(item):
        raise ItemConflict(f"escalation_id {item.escalation_id!r} is no longer open")
    e = item.escalation
    evidence = {
        "bulk_accept": {
            "batch_id": batch_id,
            "model": wanted.model,
            "rule_id": wanted.rule_id,
            "tier": wanted.tier,
            "min_confidence": wanted.min_confidence,
            "calibrated_confidence": e.calibrated_confidence,
        }
    }
    return Resolution(
        reviewer=lead,
        verdict=Verdict.ACCEPT,
        label_class=e.predicted_class,
        label=e.predicted_label,
        rationale=(
            f"bulk accept {batch_id}: calibrated confidence {e.calibrated_confidence:g}"
            f" >= {wanted.min_confidence:g}"
        ),
        time_to_label_seconds=0.0,
        resolved_at=now,
        evidence=json.dumps(evidence, sort_keys=True),
    )


@dataclass(frozen=True, slots=True)
class Reverted:
    """A resolution taken back: who reverted it, when and why."""

    escalation_id: str
    resolution: Resolution
    reverted_by: str
    reverted_at: float
    reason: str
    forwarded_at: float = 0.0  # when it had reached the feedback service (0: never)
    number: int = 1  # which of the item's resolutions it was (1: the first)
    retracted_at: float = 0.0  # when its retraction reached the feedback service (0: not)


def check_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidRequest("reason", "a revert needs a reason")
    if len(reason) > MAX_REASON:
        raise InvalidRequest("reason", f"at most {MAX_REASON} characters")


def check_revertible(item: ReviewItem) -> Resolution:
    """The item's resolution, or InvalidRequest naming escalation_id when it has none."""
    if item.resolution is None:
        raise InvalidRequest(
            "escalation_id", f"{item.escalation_id!r} is not resolved: there is nothing to revert"
        )
    return item.resolution
