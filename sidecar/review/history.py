"""What happened to an item in the queue that its row does not keep: each claim, each
release (a skip) and each escalation level raise, with when and by whom. Answers,
the final resolution and reverted resolutions are kept in their own tables and are
not repeated here. Pure types; the store writes and reads them (migration 7)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    CLAIMED = "claimed"  # actor: the reviewer; detail: the lease's end (Unix seconds)
    RELEASED = "released"  # actor: the holder who gave it back
    RAISED = "raised"  # actor: none (the sweep); detail: the new escalation level


@dataclass(frozen=True, slots=True)
class ItemEvent:
    at: float
    kind: EventKind
    actor: str = ""
    detail: str = ""
