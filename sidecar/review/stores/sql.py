"""The review store's SQL, written once for SQLite and PostgreSQL, and the store logic
both run. Statements use ``:name`` parameters; a Dialect renders them once, at
start-up, for its driver (``sidecar.storage.sql``) and adds what only it has (row
locks, ``SKIP LOCKED`` so replicas claiming from one database never wait on, or hand
out, the same item). Opening a store applies the migrations (``migrations``) the
database lacks.

Templates name the shared fragments (``{columns}``, ``{claimable}``, ``{urgency}``)
and the dialect's additions (``{skip_locked}``, ``{row_lock}``); nothing else is
ever formatted into a statement.

Four tables: ``review_items``, each item's escalation as JSON text (exactly what was
submitted) beside the columns the queue filters and orders by, and its final
resolution; ``review_answers``, the answers of items needing several reviews (one
per reviewer, the primary key); ``review_reverts``, each resolution a lead
reverted; ``review_events``, each claim, release and escalation level raise (the
item's history; ``history``). An unresolved item whose answers are all in is in
adjudication: its state column reads OPEN (or CLAIMED by a lead), and it reads
ADJUDICATION. Times are Unix seconds (float)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.escalation.record import Escalation
from sidecar.review.bulk import Reverted
from sidecar.review.errors import ItemNotFound
from sidecar.review.history import EventKind, ItemEvent
from sidecar.review.item import TIERS, Agreement, ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.resolution import Settled
from sidecar.review.sla import Sla
from sidecar.review.stores.migrations import SCHEMA
from sidecar.storage.sql import Database, Dialect, Transaction, render_all
from sidecar.storage.store import ServiceStore

COLUMNS = (
    "escalation_id, model, tier, priority, state, due_at, escalation_level, received_at, "
    "claimed_by, claimed_at, lease_expires_at, reviewer, verdict, label_class, label, "
    "rationale, time_to_label_seconds, resolved_at, acted_by, evidence, escalation, "
    "reviews_required, consensus, answered, agreement"
)
URGENCY = "escalation_level DESC, priority, due_at, received_at, escalation_id"
# An item a reviewer can claim: open, or claimed with its lease run out.
CLAIMABLE = "state <> 'RESOLVED' AND (state = 'OPEN' OR lease_expires_at <= :now)"
# Every answer is in and they disagreed: only a lead may resolve it.
ADJUDICATING = "answered >= reviews_required AND reviews_required > 1"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement's template; ``statements`` renders them for one dialect."""

    insert: str = """
        INSERT INTO review_items (escalation_id, model, tier, priority, state, due_at,
            escalation_level, received_at, trace_id, escalation, reviews_required, consensus)
        VALUES (:escalation_id, :model, :tier, :priority, 'OPEN', :due_at,
            :escalation_level, :received_at, :trace_id, :escalation, :reviews_required,
            :consensus)
        ON CONFLICT (escalation_id) DO NOTHING"""
    claim: str = """
        UPDATE review_items
        SET state = 'CLAIMED', claimed_by = :reviewer, claimed_at = :now,
            lease_expires_at = :lease_expires_at
        WHERE escalation_id = (
            SELECT escalation_id FROM review_items
            WHERE {claimable} AND (:model = '' OR model = :model)
              AND (:lead = 1 OR NOT ({adjudicating}))
              AND NOT EXISTS (
                  SELECT 1 FROM review_answers a
                  WHERE a.escalation_id = review_items.escalation_id
                    AND a.reviewer = :reviewer)
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
            acted_by = :acted_by, evidence = :evidence, agreement = :agreement
        WHERE escalation_id = :escalation_id"""
    answer: str = """
        INSERT INTO review_answers (escalation_id, reviewer, verdict, label_class, label,
            rationale, time_to_label_seconds, answered_at, acted_by, evidence)
        VALUES (:escalation_id, :reviewer, :verdict, :label_class, :label, :rationale,
            :time_to_label_seconds, :resolved_at, :acted_by, :evidence)"""
    count_answer: str = """
        UPDATE review_items SET answered = answered + 1 WHERE escalation_id = :escalation_id"""
    answers: str = """
        SELECT reviewer, verdict, label_class, label, rationale, time_to_label_seconds,
            answered_at AS resolved_at, acted_by, evidence
        FROM review_answers WHERE escalation_id = :escalation_id
        ORDER BY answered_at, reviewer"""
    release: str = """
        UPDATE review_items
        SET state = 'OPEN', claimed_by = '', claimed_at = 0, lease_expires_at = 0
        WHERE escalation_id = :escalation_id"""
    list: str = """
        SELECT {columns} FROM review_items
        WHERE (:state = ''
               OR (:state = 'OPEN' AND {claimable} AND NOT ({adjudicating}))
               OR (:state = 'ADJUDICATION' AND {claimable} AND {adjudicating})
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
    # The item's resolution number ``:number`` (1 + its reverts) reached the feedback
    # service: marked on the item if it still stands, else on its reverted copy (a
    # revert while it was on its way), which is then retracted.
    forwarded: str = """
        UPDATE review_items SET forwarded_at = :now
        WHERE escalation_id = :escalation_id AND state = 'RESOLVED' AND forwarded_at = 0
          AND :number = 1 + (
              SELECT COUNT(*) FROM review_reverts r WHERE r.escalation_id = :escalation_id)"""
    forwarded_reverted: str = """
        UPDATE review_reverts SET forwarded_at = :now
        WHERE escalation_id = :escalation_id AND number = :number AND forwarded_at = 0"""
    unforwarded_reverts: str = """
        SELECT r.escalation_id, COUNT(*) AS reverted
        FROM review_reverts r JOIN review_items i ON i.escalation_id = r.escalation_id
        WHERE i.state = 'RESOLVED' AND i.forwarded_at = 0
        GROUP BY r.escalation_id"""
    unretracted: str = """
        SELECT r.escalation_id, r.reviewer, r.verdict, r.label_class, r.label, r.rationale,
            r.time_to_label_seconds, r.resolved_at, r.acted_by, r.evidence, r.agreement,
            r.forwarded_at, r.reverted_by, r.reverted_at, r.reason, r.number,
            r.retracted_at, i.escalation
        FROM review_reverts r JOIN review_items i ON i.escalation_id = r.escalation_id
        WHERE r.forwarded_at > 0 AND r.retracted_at = 0
        ORDER BY r.reverted_at, r.escalation_id, r.number LIMIT :limit"""
    retracted: str = """
        UPDATE review_reverts SET retracted_at = :now
        WHERE escalation_id = :escalation_id AND number = :number AND retracted_at = 0"""
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
    keep_reverted: str = """
        INSERT INTO review_reverts (escalation_id, reviewer, verdict, label_class, label,
            rationale, time_to_label_seconds, resolved_at, acted_by, evidence, agreement,
            forwarded_at, reverted_by, reverted_at, reason, number)
        SELECT escalation_id, reviewer, verdict, label_class, label, rationale,
            time_to_label_seconds, resolved_at, acted_by, evidence, agreement, forwarded_at,
            :reverted_by, :reverted_at, :reason,
            1 + (SELECT COUNT(*) FROM review_reverts p WHERE p.escalation_id = :escalation_id)
        FROM review_items WHERE escalation_id = :escalation_id"""
    reopen: str = """
        UPDATE review_items
        SET state = 'OPEN', claimed_by = '', claimed_at = 0, lease_expires_at = 0,
            reviewer = NULL, verdict = NULL, label_class = NULL, label = NULL,
            rationale = NULL, time_to_label_seconds = NULL, resolved_at = NULL,
            acted_by = '', evidence = '', agreement = '', forwarded_at = 0
        WHERE escalation_id = :escalation_id"""
    reverts: str = """
        SELECT escalation_id, reviewer, verdict, label_class, label, rationale,
            time_to_label_seconds, resolved_at, acted_by, evidence, agreement, forwarded_at,
            reverted_by, reverted_at, reason, number, retracted_at
        FROM review_reverts WHERE escalation_id = :escalation_id
        ORDER BY number"""
    event: str = """
        INSERT INTO review_events (escalation_id, at, kind, actor, detail)
        VALUES (:escalation_id, :at, :kind, :actor, :detail)"""
    events: str = """
        SELECT at, kind, actor, detail FROM review_events
        WHERE escalation_id = :escalation_id ORDER BY at, kind"""


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for dialect."""
    return render_all(
        Statements(),
        dialect,
        columns=COLUMNS,
        claimable=CLAIMABLE,
        adjudicating=ADJUDICATING,
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
        self, reviewer: str, model: str, lease_seconds: float, now: float, lead: bool = False
    ) -> ReviewItem | None:
        parameters = {
            "reviewer": reviewer,
            "model": model,
            "now": now,
            "lease_expires_at": now + lease_seconds,
            "lead": int(lead),
        }
        with self._transaction() as tx:
            rows = tx.rows(self._sql.claim, parameters)
            if not rows:
                return None
            until = f"{now + lease_seconds:.3f}"
            claimed = ItemEvent(now, EventKind.CLAIMED, reviewer, until)
            tx.run(self._sql.event, _event(rows[0]["escalation_id"], claimed))
            return self._read(tx, rows[0], now)

    def resolve(
        self, escalation_id: str, settle: Callable[[ReviewItem], Settled], now: float
    ) -> ReviewItem:
        key = {"escalation_id": escalation_id}

        def resolved(tx: Transaction, item: ReviewItem) -> None:
            settled = settle(item)
            if settled.answer is not None:
                tx.run(self._sql.answer, {**key, **settled.answer.to_dict()})
                tx.run(self._sql.count_answer, key)
            if settled.final is not None:
                tx.run(self._sql.resolve, {**key, **settled.final.to_dict()})
            else:  # reopened for the next answer, or for adjudication
                tx.run(self._sql.release, key)

        return self._change(escalation_id, resolved, now)

    def release(
        self, escalation_id: str, check: Callable[[ReviewItem], None], now: float
    ) -> ReviewItem:
        def released(tx: Transaction, item: ReviewItem) -> None:
            check(item)
            tx.run(self._sql.release, {"escalation_id": escalation_id})
            given_back = ItemEvent(now, EventKind.RELEASED, item.claimed_by)
            tx.run(self._sql.event, _event(escalation_id, given_back))

        return self._change(escalation_id, released, now)

    def revert(
        self,
        escalation_id: str,
        check: Callable[[ReviewItem], Resolution],
        reverted_by: str,
        reason: str,
        now: float,
    ) -> ReviewItem:
        def reverted(tx: Transaction, item: ReviewItem) -> None:
            check(item)
            key = {"escalation_id": escalation_id}
            tx.run(
                self._sql.keep_reverted,
                {**key, "reverted_by": reverted_by, "reverted_at": now, "reason": reason},
            )
            tx.run(self._sql.reopen, key)

        return self._change(escalation_id, reverted, now)

    def reverts(self, escalation_id: str) -> list[Reverted]:
        rows = self._rows(self._sql.reverts, {"escalation_id": escalation_id})
        return [_reverted(row) for row in rows]

    def _change(
        self,
        escalation_id: str,
        change: Callable[[Transaction, ReviewItem], None],
        now: float,
    ) -> ReviewItem:
        """Let change(tx, item) write (item read as of now and held locked while change
        decides) and return the item as changed."""
        key = {"escalation_id": escalation_id}
        with self._transaction() as tx:
            rows = tx.rows(self._sql.select_one, key)
            if not rows:
                raise ItemNotFound(f"escalation_id {escalation_id!r}: no such item")
            change(tx, self._read(tx, rows[0], now))
            rows = tx.rows(self._sql.select_one, key)
            return self._read(tx, rows[0], now)

    def _read(self, tx: Transaction, row: Mapping[str, Any], now: float) -> ReviewItem:
        """The row's item with its answers (read only for an item that has some)."""
        answers: list[dict[str, Any]] = []
        if row["answered"]:
            answers = tx.rows(self._sql.answers, {"escalation_id": row["escalation_id"]})
        return item_from_row(row, now, answers)

    def _items(self, statement: str, parameters: Mapping[str, Any], now: float) -> list[ReviewItem]:
        with self._transaction() as tx:
            return [self._read(tx, row, now) for row in tx.rows(statement, parameters)]

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
        return self._items(self._sql.list, parameters, now)

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
        return self._items(self._sql.resolved_page, parameters, now)

    def unforwarded(self, limit: int, now: float) -> list[ReviewItem]:
        return self._items(self._sql.unforwarded, {"limit": limit}, now)

    def mark_forwarded(self, resolved: Sequence[tuple[ReviewItem, int]], now: float) -> None:
        marks = [{"escalation_id": i.escalation_id, "number": n, "now": now} for i, n in resolved]
        with self._transaction() as tx:
            tx.run_many(self._sql.forwarded, marks)
            tx.run_many(self._sql.forwarded_reverted, marks)

    def raise_overdue(self, sla: Sla, now: float) -> list[ReviewItem]:
        parameters: dict[str, Any] = {"now": now}
        parameters.update({f"sla_{tier.lower()}": float(sla.seconds[tier]) for tier in TIERS})
        with self._transaction() as tx:
            rows = tx.rows(self._sql.raise_overdue, parameters)
            events = [
                _event(row["escalation_id"], _raised(now, row["escalation_level"])) for row in rows
            ]
            if events:
                tx.run_many(self._sql.event, events)
        items = [item_from_row(row, now) for row in rows]
        return sorted(items, key=lambda i: (-i.escalation_level, i.priority, i.escalation_id))

    def item(self, escalation_id: str, now: float) -> ReviewItem | None:
        items = self._items(self._sql.item, {"escalation_id": escalation_id}, now)
        return items[0] if items else None

    def held(self, reviewer: str, now: float) -> int:
        rows = self._rows(self._sql.held, {"reviewer": reviewer, "now": now})
        return int(rows[0]["items"])

    def counts(self, now: float) -> dict[tuple[ItemState, str], int]:
        rows = self._rows(self._sql.counts, {"now": now})
        return {(ItemState(row["held"]), row["tier"]): int(row["items"]) for row in rows}

    def unforwarded_numbered(self, limit: int, now: float) -> list[tuple[ReviewItem, int]]:
        with self._transaction() as tx:
            items = [
                self._read(tx, row, now) for row in tx.rows(self._sql.unforwarded, {"limit": limit})
            ]
            reverted = {
                row["escalation_id"]: int(row["reverted"])
                for row in tx.rows(self._sql.unforwarded_reverts, {})
            }
        return [(item, 1 + reverted.get(item.escalation_id, 0)) for item in items]

    def unretracted(self, limit: int) -> list[tuple[Escalation, Reverted]]:
        rows = self._rows(self._sql.unretracted, {"limit": limit})
        return [
            (Escalation.from_dict(json.loads(row["escalation"])), _reverted(row)) for row in rows
        ]

    def mark_retracted(self, reverts: Sequence[tuple[str, int]], now: float) -> None:
        marks = [{"escalation_id": i, "number": n, "now": now} for i, n in reverts]
        with self._transaction() as tx:
            tx.run_many(self._sql.retracted, marks)

    def history(self, escalation_id: str) -> list[ItemEvent]:
        rows = self._rows(self._sql.events, {"escalation_id": escalation_id})
        return [
            ItemEvent(float(row["at"]), EventKind(row["kind"]), row["actor"], row["detail"])
            for row in rows
        ]


def _reverted(row: Mapping[str, Any]) -> Reverted:
    return Reverted(
        escalation_id=row["escalation_id"],
        resolution=_resolution(row),
        reverted_by=row["reverted_by"],
        reverted_at=float(row["reverted_at"]),
        reason=row["reason"],
        forwarded_at=float(row["forwarded_at"]),
        number=int(row["number"]),
        retracted_at=float(row["retracted_at"]),
    )


def _raised(now: float, level: int) -> ItemEvent:
    return ItemEvent(now, EventKind.RAISED, "", str(level))


def _event(escalation_id: str, event: ItemEvent) -> dict[str, Any]:
    return {
        "escalation_id": escalation_id,
        "at": event.at,
        "kind": event.kind.value,
        "actor": event.actor,
        "detail": event.detail,
    }


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
        "reviews_required": item.reviews_required,
        "consensus": item.consensus.value,
    }


def item_from_row(
    row: Mapping[str, Any], now: float, answers: Sequence[Mapping[str, Any]] = ()
) -> ReviewItem:
    """The item a row holds, its state as of now (an expired lease reads OPEN, or
    ADJUDICATION when its answers are all in), with answers (rows of review_answers)."""
    state = ItemState(row["state"])
    if state is ItemState.CLAIMED and row["lease_expires_at"] <= now:
        state = ItemState.OPEN
    required, answered = int(row["reviews_required"]), int(row["answered"])
    if state is ItemState.OPEN and required > 1 and answered >= required:
        state = ItemState.ADJUDICATION
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
        reviews_required=required,
        consensus=Agreement(row["consensus"]),
        answered=answered,
        answers=tuple(_resolution(a) for a in answers),
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
        agreement=row.get("agreement", ""),
    )
