"""Where the review queue keeps its items: one interface, implemented once in SQL
(``stores.sql``) on a SQLite file, the default, or PostgreSQL for replicas sharing one
database. Every method takes ``now`` from the caller: stores read no clock.

Each method is one transaction. A store raises ItemNotFound and whatever ``settle``
raises as they are, and StoreUnavailable when the database fails or cannot be
reached (the caller may retry)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from sidecar.auth import Principal
from sidecar.escalation.record import Escalation
from sidecar.review.bulk import Reverted
from sidecar.review.history import ItemEvent
from sidecar.review.item import ItemState, Resolution, ReviewItem
from sidecar.review.resolution import Settled
from sidecar.review.sla import Sla
from sidecar.review.stores.sql import SqlStore
from sidecar.storage.store import open_database


class ReviewStore(Protocol):
    def add(self, items: Sequence[ReviewItem]) -> list[bool]:
        """Store new items; per item True, or False when its escalation_id is already
        held (that item is left exactly as it was)."""
        ...

    def claim(
        self, reviewer: str, model: str, lease_seconds: float, now: float, lead: bool = False
    ) -> ReviewItem | None:
        """Lease the most urgent open item (of model, if not empty) to reviewer:
        highest escalation_level, then lowest priority, then earliest due_at. An item
        whose lease has expired is open; one reviewer has answered is not, for them;
        one in adjudication is, for a lead only. None when nothing is open."""
        ...

    def resolve(
        self, escalation_id: str, settle: Callable[[ReviewItem], Settled], now: float
    ) -> ReviewItem:
        """Record settle(item) on the item (read as of now, with its answers), holding
        it locked while settle decides: its answer among the item's answers, its final
        resolution, or else the item reopened. ItemNotFound when there is no such
        escalation_id."""
        ...

    def release(
        self, escalation_id: str, check: Callable[[ReviewItem], None], now: float
    ) -> ReviewItem:
        """End the item's claim now, after check(item) (read as of now, held locked)
        has let it: the item is OPEN, held by nobody. ItemNotFound when there is no
        such escalation_id."""
        ...

    def revert(
        self,
        escalation_id: str,
        check: Callable[[ReviewItem], Resolution],
        reverted_by: str,
        reason: str,
        now: float,
    ) -> ReviewItem:
        """After check(item) (read as of now, held locked) has let it, keep the item's
        resolution in its revert history (with reverted_by, now and reason) and reopen
        the item: OPEN, held by nobody, unresolved, not forwarded. ItemNotFound when
        there is no such escalation_id."""
        ...

    def reverts(self, escalation_id: str) -> list[Reverted]:
        """The item's reverted resolutions, oldest revert first."""
        ...

    def history(self, escalation_id: str) -> list[ItemEvent]:
        """The item's claims, releases and escalation level raises (those since the
        store kept them: migration 8), oldest first."""
        ...

    def items(
        self, state: ItemState | None, model: str, tier: str, limit: int, now: float
    ) -> list[ReviewItem]:
        """Items (filters: None or empty means any), most urgent first, resolved last."""
        ...

    def resolved(
        self, model: str, since: float, after: tuple[float, str] | None, limit: int, now: float
    ) -> list[ReviewItem]:
        """Up to limit resolved items, oldest resolution first (ties by escalation_id),
        resolved at or after since and strictly after the key ``after`` (a page's last
        (resolved_at, escalation_id)): keyset pages, so no transaction spans a stream."""
        ...

    def unforwarded(self, limit: int, now: float) -> list[ReviewItem]:
        """Up to limit resolved items not yet sent to the feedback service, oldest
        resolution first."""
        ...

    def mark_forwarded(self, resolved: Sequence[tuple[ReviewItem, int]], now: float) -> None:
        """Record that these resolutions, each (the item, its number: 1 + the item's
        reverts before it), reached the feedback service. One reverted since it
        was read is marked in the revert history instead (it is then to be retracted)."""
        ...

    def raise_overdue(self, sla: Sla, now: float) -> list[ReviewItem]:
        """Every unresolved item due at or before now: escalation_level + 1 and a new
        due_at of now plus its tier's SLA. Returns them as raised."""
        ...

    def item(self, escalation_id: str, now: float) -> ReviewItem | None:
        """The item, its state as of now; None when there is none."""
        ...

    def held(self, reviewer: str, now: float) -> int:
        """How many items reviewer holds under a lease that has not run out."""
        ...

    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None:
        """Create or replace a principal who may call the queue (sidecar.storage.principals)."""
        ...

    def principal_for_token(self, token_sha256: str) -> Principal | None: ...

    def principal_for_subject(self, cert_subject: str) -> Principal | None: ...

    def principals(self) -> list[Principal]: ...

    def counts(self, now: float) -> Mapping[tuple[ItemState, str], int]:
        """Unresolved items by (OPEN or CLAIMED, tier), as of now (an item in
        adjudication is OPEN: open to leads)."""
        ...

    def close(self) -> None: ...

    def unforwarded_numbered(self, limit: int, now: float) -> list[tuple[ReviewItem, int]]:
        """``unforwarded``, each item with its resolution's number (1 + the item's
        reverts), read in one transaction."""
        ...

    def unretracted(self, limit: int) -> list[tuple[Escalation, Reverted]]:
        """Up to limit reverted resolutions that had reached the feedback service and
        whose retraction has not, oldest revert first, each with its escalation."""
        ...

    def mark_retracted(self, reverts: Sequence[tuple[str, int]], now: float) -> None:
        """Record that the retractions of these reverted resolutions, each
        (escalation_id, number), reached the feedback service."""
        ...


def open_store(url: str) -> ReviewStore:
    """The store on ``postgresql://...`` (a libpq URI) or ``sqlite:PATH`` (or a bare
    path); ``sidecar.storage.store.open_database`` says how each is opened."""
    return SqlStore(open_database(url))
