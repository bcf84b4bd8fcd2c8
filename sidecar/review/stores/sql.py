"""The review store's SQL, written once for SQLite and PostgreSQL, and the store logic
both run. Statements use ``:name`` parameters; a Dialect renders them once, at
start-up, for its driver (``sidecar.storage.sql``) and adds what only it has (row
locks, ``SKIP LOCKED`` so replicas claiming from one database never wait on, or hand
out, the same item). Opening a store applies the migrations (``migrations``) the
database lacks.

Templates name the shared fragments (``{columns}``, ``{claimable}``, ``{urgency}``)
and the dialect's additions (``{skip_locked}``, ``{row_lock}``); nothing else is
ever formatted into a statement.

One table: each item's escalation as JSON text (exactly what was submitted) beside
the columns the queue filters and orders by. Times are Unix seconds (float)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ItemNotFound
from sidecar.escalation.record import Escalation
from sidecar.review.item import TIERS, ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.sla import Sla
from sidecar.review.stores.migrations import SCHEMA
from sidecar.storage.sql import Database, Dialect, render_all
from sidecar.storage.store import ServiceStore

COLUMNS = (
    "escalation_id, model, tier, priority, state, due_at, escalation_level, received_at, "
    "claimed_by, claimed_at, lease_expires_at, reviewer, verdict, label_class, label, "
    "rationale, time_to_label_seconds, resolved_at, acted_by, evidence, escalation"
)
URGENCY = "escalation_level DESC, priority, due_at, received_at, escalation_id"
# An item a reviewer can claim: open, or claimed with its lease run out.
CLAIMABLE = "state <> 'RESOLVED' AND (state = 'OPEN' OR lease_expires_at <= :now)"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement's template; ``statements`` renders them for one dialect."""

    insert: str = """
        INSERT INTO review_items (escalation_id, model, tier, priority, state, due_at,
            escalation_level, received_at, trace_id, escalation)
        VALUES (:escalation_id, :model, :tier, :priority, 'OPEN', :due_at,
            :escalation_level, :received_at, :trace_id, :escalation)
        ON CONFLICT (escalation_id) DO NOTHING"""
    claim: str = """
        UPDATE review_items
        SET state = 'CLAIMED', claimed_by = :reviewer, claimed_at = :now,
            lease_expires_at = :lease_expires_at
        WHERE escalation_id = (
            SELECT escalation_id FROM review_items
            WHERE {claimable} AND (:model = '' OR model = :model)
            ORDER BY {urgency}
            LIMIT 1
            {skip_locked})
        RETURNING {columns}"""
    select_one: str = (
        "SELECT {columns} FROM review_items WHERE escalation_id = :escalation_id {row_lock}"
    )
    resolve: str = """
        UPDATE review_items
        SET state = 'RESOLVED', reviewer = :reviewer, verdict = :verdict,
            label_class = :label_class, label = :label, rationale = :rationale,
            time_to_label_seconds = :time_to_label_seconds, resolved_at = :resolved_at,
            acted_by = :acted_by, evidence = :evidence
        WHERE escalation_id = :escalation_id"""
    release: str = """
        UPDATE review_items
        SET state = 'OPEN', claimed_by = '', claimed_at = 0, lease_expires_at = 0
        WHERE escalation_id = :escalation_id"""
    list: str = """
        SELECT {columns} FROM review_items
        WHERE (:state = ''
               OR (:state = 'OPEN' AND {claimable})
               OR (:state = 'CLAIMED' AND state = 'CLAIMED' AND lease_expires_at > :now)
               OR (:state = 'RESOLVED' AND state = 'RESOLVED'))
          AND (:model = '' OR model = :model)
          AND (:tier = '' OR tier = :tier)
        ORDER BY CASE WHEN state = 'RESOLVED' THEN 1 ELSE 0 END, {urgency}
        LIMIT :limit"""
    resolved_page: str = """
        SELECT {columns} FROM review_items
        WHERE state = 'RESOLVED' AND resolved_at >= :since
          AND (:model = '' OR model = :model)
          AND (resolved_at > :after_at OR (resolved_at = :after_at AND escalation_id > :after_id))
        ORDER BY resolved_at, escalation_id
        LIMIT :limit"""
    raise_overdue: str = """
        UPDATE review_items
        SET escalation_level = escalation_level + 1,
            due_at = :now + CASE tier
                WHEN 'HUMAN_PRIMARY' THEN :sla_human_primary
                WHEN 'HUMAN_ASSISTED' THEN :sla_human_assisted
                ELSE :sla_automated END
        WHERE state <> 'RESOLVED' AND due_at <= :now
        RETURNING {columns}"""
    unforwarded: str = """
        SELECT {columns} FROM review_items
        WHERE state = 'RESOLVED' AND forwarded_at = 0
        ORDER BY resolved_at, escalation_id LIMIT :limit"""
    forwarded: str = """
        UPDATE review_items SET forwarded_at = :now
        WHERE escalation_id = :escalation_id AND forwarded_at = 0"""
    counts: str = """
        SELECT tier,
               CASE WHEN state = 'CLAIMED' AND lease_expires_at > :now
                    THEN 'CLAIMED' ELSE 'OPEN' END AS held,
               COUNT(*) AS items
        FROM review_items WHERE state <> 'RESOLVED'
        GROUP BY tier, held"""
    held: str = """
        SELECT COUNT(*) AS items FROM review_items
        WHERE state = 'CLAIMED' AND claimed_by = :reviewer AND lease_expires_at > :now"""
    item: str = "SELECT {columns} FROM review_items WHERE escalation_id = :escalation_id"


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for dialect."""
    return render_all(
        Statements(),
        dialect,
        columns=COLUMNS,
        claimable=CLAIMABLE,
        urgency=URGENCY,
    )


class SqlStore(ServiceStore):
    """The ReviewStore logic on db: a SQLite file (the default), or PostgreSQL for
    replicas sharing one database.

    On SQLite every transaction is ``BEGIN IMMEDIATE``, so processes sharing the file
    take the write lock before they read what they will change: two never claim one
    item. On PostgreSQL claim chooses its item ``FOR UPDATE SKIP LOCKED`` at READ
    COMMITTED: a replica skips an item another is claiming, and never claims it
    twice."""

    def __init__(self, db: Database) -> None:
        self._sql = statements(db.dialect)
        super().__init__(db, SCHEMA)

    def add(self, items: Sequence[ReviewItem]) -> list[bool]:
        with self._transaction() as tx:
            return [tx.run(self._sql.insert, _insert_parameters(item)) == 1 for item in items]

    def claim(
        self, reviewer: str, model: str, lease_seconds: float, now: float
    ) -> ReviewItem | None:
        parameters = {
            "reviewer": reviewer,
            "model": model,
            "now": now,
            "lease_expires_at": now + lease_seconds,
        }
        rows = self._rows(self._sql.claim, parameters)
        return item_from_row(rows[0], now) if rows else None

    def resolve(
        self, escalation_id: str, settle: Callable[[ReviewItem], Resolution], now: float
    ) -> ReviewItem:
        def resolved(item: ReviewItem) -> tuple[str, dict[str, Any]]:
            return self._sql.resolve, {"escalation_id": escalation_id, **settle(item).to_dict()}

        return self._change(escalation_id, resolved, now)

    def release(
        self, escalation_id: str, check: Callable[[ReviewItem], None], now: float
    ) -> ReviewItem:
        def released(item: ReviewItem) -> tuple[str, dict[str, Any]]:
            check(item)
            return self._sql.release, {"escalation_id": escalation_id}

        return self._change(escalation_id, released, now)

    def _change(
        self,
        escalation_id: str,
        change: Callable[[ReviewItem], tuple[str, dict[str, Any]]],
        now: float,
    ) -> ReviewItem:
        """Run the statement change(item) gives (item read as of now and held locked
        while change decides) and return the item as changed."""
        key = {"escalation_id": escalation_id}
        with self._transaction() as tx:
            rows = tx.rows(self._sql.select_one, key)
            if not rows:
                raise ItemNotFound(f"escalation_id {escalation_id!r}: no such item")
            statement, parameters = change(item_from_row(rows[0], now))
            tx.run(statement, parameters)
            rows = tx.rows(self._sql.select_one, key)
        return item_from_row(rows[0], now)

    def items(
        self, state: ItemState | None, model: str, tier: str, limit: int, now: float
    ) -> list[ReviewItem]:
        parameters = {
            "state": state.value if state else "",
            "model": model,
            "tier": tier,
            "limit": limit,
            "now": now,
        }
        rows = self._rows(self._sql.list, parameters)
        return [item_from_row(row, now) for row in rows]

    def resolved(
        self, model: str, since: float, after: tuple[float, str] | None, limit: int, now: float
    ) -> list[ReviewItem]:
        # The first page's key sits below since, so it starts at since.
        after_at, after_id = after or (since - 1.0, "")
        parameters = {
            "model": model,
            "since": since,
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit,
        }
        rows = self._rows(self._sql.resolved_page, parameters)
        return [item_from_row(row, now) for row in rows]

    def unforwarded(self, limit: int, now: float) -> list[ReviewItem]:
        rows = self._rows(self._sql.unforwarded, {"limit": limit})
        return [item_from_row(row, now) for row in rows]

    def mark_forwarded(self, escalation_ids: Sequence[str], now: float) -> None:
        with self._transaction() as tx:
            tx.run_many(
                self._sql.forwarded, [{"escalation_id": i, "now": now} for i in escalation_ids]
            )

    def raise_overdue(self, sla: Sla, now: float) -> list[ReviewItem]:
        parameters: dict[str, Any] = {"now": now}
        parameters.update({f"sla_{tier.lower()}": float(sla.seconds[tier]) for tier in TIERS})
        rows = self._rows(self._sql.raise_overdue, parameters)
        items = [item_from_row(row, now) for row in rows]
        return sorted(items, key=lambda i: (-i.escalation_level, i.priority, i.escalation_id))

    def item(self, escalation_id: str, now: float) -> ReviewItem | None:
        rows = self._rows(self._sql.item, {"escalation_id": escalation_id})
        return item_from_row(rows[0], now) if rows else None

    def held(self, reviewer: str, now: float) -> int:
        rows = self._rows(self._sql.held, {"reviewer": reviewer, "now": now})
        return int(rows[0]["items"])

    def counts(self, now: float) -> dict[tuple[ItemState, str], int]:
        rows = self._rows(self._sql.counts, {"now": now})
        return {(ItemState(row["held"]), row["tier"]): int(row["items"]) for row in rows}


def _insert_parameters(item: ReviewItem) -> dict[str, Any]:
    e = item.escalation
    return {
        "escalation_id": e.escalation_id,
        "model": e.model,
        "tier": e.tier,
        "priority": item.priority,
        "due_at": item.due_at,
        "escalation_level": item.escalation_level,
        "received_at": item.received_at,
        "trace_id": e.trace_id,
        # Python's json keeps a non-finite calibrated_confidence (a fallback's) as NaN.
        "escalation": json.dumps(e.to_dict()),
    }


def item_from_row(row: Mapping[str, Any], now: float) -> ReviewItem:
    """The item a row holds, its state as of now (an expired lease reads OPEN)."""
    state = ItemState(row["state"])
    if state is ItemState.CLAIMED and row["lease_expires_at"] <= now:
        state = ItemState.OPEN
    return ReviewItem(
        escalation=Escalation.from_dict(json.loads(row["escalation"])),
        state=state,
        priority=int(row["priority"]),
        due_at=float(row["due_at"]),
        escalation_level=int(row["escalation_level"]),
        received_at=float(row["received_at"]),
        claimed_by=row["claimed_by"],
        claimed_at=float(row["claimed_at"]),
        lease_expires_at=float(row["lease_expires_at"]),
        resolution=_resolution(row) if state is ItemState.RESOLVED else None,
    )


def _resolution(row: Mapping[str, Any]) -> Resolution:
    return Resolution(
        reviewer=row["reviewer"],
        verdict=Verdict(row["verdict"]),
        label_class=int(row["label_class"]),
        label=row["label"],
        rationale=row["rationale"],
        time_to_label_seconds=float(row["time_to_label_seconds"]),
        resolved_at=float(row["resolved_at"]),
        acted_by=row["acted_by"],
        evidence=row["evidence"],
    )
