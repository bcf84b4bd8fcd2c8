"""What the review queue holds: an escalation with its place in the queue and, once a
reviewer has decided, its resolution. Pure types, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sidecar.escalation.record import Escalation

# The tiers an escalation can carry, most urgent first (AUTOMATED: an audit sample).
TIERS = ("HUMAN_PRIMARY", "HUMAN_ASSISTED", "AUTOMATED")
# Lower is more urgent; fixed by the contract (review.proto, ReviewItem.priority).
PRIORITY = {tier: rank for rank, tier in enumerate(TIERS)}
# Resolution.label_class when the reviewer named the true class by label only.
UNKNOWN_CLASS = -1


class ItemState(StrEnum):
    OPEN = "OPEN"
    CLAIMED = "CLAIMED"
    RESOLVED = "RESOLVED"
    # Its reviewers disagreed (``consensus``): open to a lead only, whose verdict is final.
    ADJUDICATION = "ADJUDICATION"


class Agreement(StrEnum):
    """How many of an item's required answers must name one class."""

    ALL = "all"
    MAJORITY = "majority"  # strictly more than half


class Verdict(StrEnum):
    ACCEPT = "ACCEPT"  # the model's predicted class is right
    OVERRIDE = "OVERRIDE"  # the model was wrong; the resolution carries the true label


@dataclass(frozen=True, slots=True)
class Resolution:
    reviewer: str
    verdict: Verdict
    label_class: int  # the true class (UNKNOWN_CLASS: a label-only override of an older version)
    label: str
    rationale: str
    time_to_label_seconds: float
    resolved_at: float
    acted_by: str = ""  # a lead who recorded the verdict for the reviewer
    evidence: str = ""  # what the reviewer was shown, a JSON object as text ('' if none)
    # Of a final resolution by consensus: "2 of 3" agreed, or "adjudicated (1 of 2
    # agreed)"; '' for an item that needed one review. Empty on an answer.
    agreement: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One escalation in the queue.

    ``state`` is as of the read: a CLAIMED item whose lease has expired reads as
    OPEN, and keeps ``claimed_by`` (its last holder may still resolve it until
    someone else claims it).

    An item needing more than one review (``reviews_required``) collects one answer
    per reviewer (``answers``, each a Resolution, in the order given; ``answered``
    counts them even where they were not read) and is reopened after each; once all
    are in, it is RESOLVED on agreement, or reads ADJUDICATION until a lead
    resolves it."""

    escalation: Escalation
    state: ItemState
    priority: int
    due_at: float
    escalation_level: int
    received_at: float
    claimed_by: str = ""
    claimed_at: float = 0.0
    lease_expires_at: float = 0.0
    resolution: Resolution | None = None
    reviews_required: int = 1
    consensus: Agreement = Agreement.ALL
    answered: int = 0
    answers: tuple[Resolution, ...] = ()

    @property
    def escalation_id(self) -> str:
        return self.escalation.escalation_id
