"""The feedback store's SQL, written once for SQLite and PostgreSQL (rendered for each
by ``sidecar.storage.sql``), and the store logic both run.

An event (a decision) is inserted ``ON CONFLICT DO NOTHING`` on its key: of two
replicas adding one at once, one row is written and the other finds it, then
compares. A label event some RETRACTION names (``retracts``) is kept, and shown in a
request's history, but every label query leaves it out (of a dataset, a retraction
received before the query's ``until``, so a rebuild gives the same bytes). An event
is attributed to the decision with its ``request_id``; one that
no decision claims once the join window has passed is dead-lettered, and released
by a replay once its decision arrives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.feedback.dataset import Labelled
from sidecar.feedback.records import DeadLetter, Decided, Health, Known, Outcome, Received
from sidecar.feedback.stores.migrations import SCHEMA
from sidecar.storage.sql import Database, Dialect, Transaction, render_all, render_parameters
from sidecar.storage.store import ServiceStore

COLUMNS = (
    "feedback_id",
    "request_id",
    "model",
    "type",
    "event",
    "sender",
    "received_at",
    "label_class",
    "retracts",
)
DECISION_COLUMNS = (
    "request_id, model, decision, classes, inclusion_probability, decided_at, sender,"
    " received_at, tier, predicted_class, labels, trace_id, span_id"
)
LABELS = "('OUTCOME', 'REVIEW', 'EXPLICIT_CORRECTION')"
# A label event e no retraction has withdrawn ({before}: a bound on when it arrived).
# The ``retracts <> ''`` term lets the databases use the partial index on retracts.
STANDING = """
    NOT EXISTS (SELECT 1 FROM feedback_events x
                WHERE x.retracts <> '' AND x.retracts = e.feedback_id{before})"""
# An event whose request no decision claims.
UNATTRIBUTED = """
    NOT EXISTS (SELECT 1 FROM feedback_decisions d WHERE d.request_id = e.request_id)"""


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement's template; ``statements`` renders them for one dialect."""

    insert: str = """
        INSERT INTO feedback_events ({columns})
        VALUES (:feedback_id, :request_id, :model, :type, :event, :sender, :received_at,
                :label_class, :retracts)
        ON CONFLICT (feedback_id) DO NOTHING"""
    stored: str = "SELECT event AS kept FROM feedback_events WHERE feedback_id = :feedback_id"
    history: str = """
        SELECT {columns} FROM feedback_events WHERE request_id = :request_id ORDER BY seq"""
    insert_decision: str = """
        INSERT INTO feedback_decisions ({decision_columns})
        VALUES (:request_id, :model, :decision, :classes, :inclusion_probability,
                :decided_at, :sender, :received_at, :tier, :predicted_class, :labels,
                :trace_id, :span_id)
        ON CONFLICT (request_id) DO NOTHING"""
    stored_decision: str = """
        SELECT decision AS kept FROM feedback_decisions WHERE request_id = :request_id"""
    decision: str = """
        SELECT {decision_columns} FROM feedback_decisions WHERE request_id = :request_id"""
    # {ids}: a list of request ids' parameters, filled in per call (``_rows_of``).
    known: str = """
        SELECT request_id, classes, labels, decided_at, trace_id, span_id
        FROM feedback_decisions WHERE request_id IN ({ids})"""
    labels_about: str = """
        SELECT {columns} FROM feedback_events e
        WHERE e.type IN {labels} AND e.request_id IN ({ids}) AND {standing}"""
    events: str = "SELECT {columns} FROM feedback_events WHERE feedback_id IN ({ids})"
    dead_letter: str = """
        INSERT INTO feedback_dead_letters (feedback_id, reason, dead_at)
        SELECT e.feedback_id, :reason, :now FROM feedback_events e
        WHERE e.received_at < :before AND {unattributed}
          AND NOT EXISTS (
              SELECT 1 FROM feedback_dead_letters l WHERE l.feedback_id = e.feedback_id)"""
    dead_letters: str = """
        SELECT {event_columns}, l.reason, l.dead_at
        FROM feedback_dead_letters l JOIN feedback_events e ON e.feedback_id = l.feedback_id
        ORDER BY e.seq LIMIT :limit"""
    release: str = """
        DELETE FROM feedback_dead_letters WHERE EXISTS (
            SELECT 1 FROM feedback_events e
            JOIN feedback_decisions d ON d.request_id = e.request_id
            WHERE e.feedback_id = feedback_dead_letters.feedback_id)"""
    dead_count: str = "SELECT COUNT(*) AS letters FROM feedback_dead_letters"
    models: str = "SELECT DISTINCT model FROM feedback_decisions ORDER BY model"
    health: str = """
        SELECT d.model, d.tier, COUNT(*) AS decisions,
               SUM(CASE WHEN l.request_id IS NULL THEN 0 ELSE 1 END) AS labelled,
               SUM(CASE WHEN l.overridden = 1 THEN 1 ELSE 0 END) AS overridden
        FROM feedback_decisions d
        LEFT JOIN (
            SELECT e.request_id,
                   MAX(CASE WHEN e.label_class >= 0 AND e.label_class <> dd.predicted_class
                            THEN 1 ELSE 0 END) AS overridden
            FROM feedback_events e
            JOIN feedback_decisions dd ON dd.request_id = e.request_id
            WHERE e.type IN {labels} AND dd.decided_at >= :since AND {standing}
            GROUP BY e.request_id
        ) l ON l.request_id = d.request_id
        WHERE d.decided_at >= :since
        GROUP BY d.model, d.tier"""
    delays: str = """
        SELECT d.model, d.tier, MIN(e.received_at) - d.decided_at AS delay
        FROM feedback_decisions d
        JOIN feedback_events e ON e.request_id = d.request_id
        WHERE d.decided_at >= :since AND e.type IN {labels} AND {standing}
        GROUP BY d.request_id, d.model, d.tier, d.decided_at"""
    new_labels: str = """
        SELECT COUNT(DISTINCT d.request_id) AS decisions, MIN(e.received_at) AS oldest
        FROM feedback_decisions d
        JOIN feedback_events e ON e.request_id = d.request_id
        WHERE d.model = :model AND e.received_at >= :since
          AND e.type IN {labels} AND {standing}"""
    last_trigger: str = "SELECT until FROM feedback_triggers WHERE model = :model"
    put_trigger: str = """
        INSERT INTO feedback_triggers (model, until, dataset, rows, at)
        VALUES (:model, :until, :dataset, :rows, :at)
        ON CONFLICT (model) DO UPDATE SET until = excluded.until,
            dataset = excluded.dataset, rows = excluded.rows, at = excluded.at"""
    event_counts: str = "SELECT type, COUNT(*) AS events FROM feedback_events GROUP BY type"
    decision_count: str = "SELECT COUNT(*) AS decisions FROM feedback_decisions"
    # By the decisions' primary key and the events' (request_id, seq) index.
    labels_of: str = """
        SELECT d.request_id, d.decision, e.event, e.received_at
        FROM feedback_decisions d
        JOIN feedback_events e ON e.request_id = d.request_id
        WHERE d.request_id IN ({ids}) AND e.type IN {labels} AND {standing}
        ORDER BY d.request_id, e.seq"""
    labelled: str = """
        SELECT d.request_id, d.decision, e.event, e.received_at
        FROM feedback_decisions d
        JOIN feedback_events e ON e.request_id = d.request_id
        WHERE d.model = :model AND d.decided_at >= :since AND d.decided_at < :until
          AND d.received_at < :until AND e.received_at < :until
          AND e.type IN {labels} AND {standing_until}
        ORDER BY d.request_id, e.seq"""
    recorded: str = """
        SELECT d.request_id, d.decision, e.event, e.received_at
        FROM feedback_decisions d
        LEFT JOIN feedback_events e ON e.request_id = d.request_id
            AND e.received_at < :until AND e.type IN {labels} AND {standing_until}
        WHERE d.model = :model AND d.decided_at >= :since AND d.decided_at < :until
          AND d.received_at < :until
        ORDER BY d.request_id, e.seq"""


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for dialect."""
    return render_all(
        Statements(),
        dialect,
        columns=", ".join(COLUMNS),
        decision_columns=DECISION_COLUMNS,
        event_columns=", ".join(f"e.{column}" for column in COLUMNS),
        labels=LABELS,
        unattributed=UNATTRIBUTED,
        standing=STANDING.format(before=""),
        standing_until=STANDING.format(before=" AND x.received_at < :until"),
        ids="{ids}",
    )


class SqlStore(ServiceStore):
    """The FeedbackStore logic on db: a SQLite file (the default), or PostgreSQL for
    replicas sharing one database."""

    def __init__(self, db: Database) -> None:
        self._sql = statements(db.dialect)
        super().__init__(db, SCHEMA)

    def add(self, events: Sequence[Received]) -> list[Outcome]:
        with self._transaction() as tx:
            return [
                _add(tx, self._sql.insert, self._sql.stored, _row(e), "feedback_id", e.event)
                for e in events
            ]

    def history(self, request_id: str) -> list[Received]:
        rows = self._rows(self._sql.history, {"request_id": request_id})
        return [Received(**row) for row in rows]

    def add_decisions(self, decisions: Sequence[Decided]) -> list[Outcome]:
        insert, stored = self._sql.insert_decision, self._sql.stored_decision
        with self._transaction() as tx:
            return [_add(tx, insert, stored, _row(d), "request_id", d.decision) for d in decisions]

    def known(self, request_ids: Sequence[str]) -> dict[str, Known]:
        return {
            row["request_id"]: Known(
                int(row["classes"]),
                tuple(json.loads(row["labels"])) if row["labels"] else (),
                float(row["decided_at"]),
                row["trace_id"],
                row["span_id"],
            )
            for row in self._rows_of(self._sql.known, request_ids)
        }

    def labels_about(self, request_ids: Sequence[str]) -> list[Received]:
        return [Received(**row) for row in self._rows_of(self._sql.labels_about, request_ids)]

    def events(self, feedback_ids: Sequence[str]) -> dict[str, Received]:
        rows = self._rows_of(self._sql.events, feedback_ids)
        return {row["feedback_id"]: Received(**row) for row in rows}

    def _rows_of(self, statement: str, request_ids: Sequence[str]) -> list[dict[str, Any]]:
        """statement's rows for request_ids (or feedback ids): only parameter names are
        written into its ``{ids}``, the ids travel as parameters."""
        if not request_ids:
            return []
        keys = {f"r{i}": request_id for i, request_id in enumerate(request_ids)}
        listed = ", ".join(f":{key}" for key in keys)
        placeholders = render_parameters(listed, self.database.dialect.parameter)
        return self._rows(statement.replace("{ids}", placeholders), keys)

    def decision(self, request_id: str) -> Decided | None:
        rows = self._rows(self._sql.decision, {"request_id": request_id})
        return Decided(**rows[0]) if rows else None

    def dead_letter_unattributed(self, before: float, reason: str, now: float) -> int:
        parameters = {"before": before, "reason": reason, "now": now}
        with self._transaction() as tx:
            return tx.run(self._sql.dead_letter, parameters)

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        rows = self._rows(self._sql.dead_letters, {"limit": limit})
        return [
            DeadLetter(Received(**{c: row[c] for c in COLUMNS}), row["reason"], row["dead_at"])
            for row in rows
        ]

    def labels_of(self, request_ids: Sequence[str]) -> list[Labelled]:
        return _joined(self._rows_of(self._sql.labels_of, request_ids))

    def labelled(self, model: str, since: float, until: float) -> list[Labelled]:
        return self._window(self._sql.labelled, model, since, until)

    def recorded(self, model: str, since: float, until: float) -> list[Labelled]:
        return self._window(self._sql.recorded, model, since, until)

    def _window(self, statement: str, model: str, since: float, until: float) -> list[Labelled]:
        return _joined(self._rows(statement, {"model": model, "since": since, "until": until}))

    def health(self, since: float) -> list[Health]:
        return [
            Health(r["model"], r["tier"], int(r["decisions"]), int(r["labelled"] or 0),
                   int(r["overridden"] or 0))
            for r in self._rows(self._sql.health, {"since": since})
        ]  # fmt: skip

    def label_delays(self, since: float) -> list[tuple[str, str, float]]:
        rows = self._rows(self._sql.delays, {"since": since})
        return [(r["model"], r["tier"], float(r["delay"])) for r in rows]

    def models(self) -> list[str]:
        return [row["model"] for row in self._rows(self._sql.models, {})]

    def new_labels(self, model: str, since: float) -> tuple[int, float | None]:
        (row,) = self._rows(self._sql.new_labels, {"model": model, "since": since})
        oldest = row["oldest"]
        return int(row["decisions"]), None if oldest is None else float(oldest)

    def last_trigger(self, model: str) -> float:
        rows = self._rows(self._sql.last_trigger, {"model": model})
        return float(rows[0]["until"]) if rows else 0.0

    def record_trigger(self, model: str, until: float, dataset: str, rows: int, at: float) -> None:
        parameters = {"model": model, "until": until, "dataset": dataset, "rows": rows, "at": at}
        with self._transaction() as tx:
            tx.run(self._sql.put_trigger, parameters)

    def counts(self) -> dict[str, int]:
        with self._transaction() as tx:
            events = {
                row["type"]: int(row["events"]) for row in tx.rows(self._sql.event_counts, {})
            }
            decisions = int(tx.rows(self._sql.decision_count, {})[0]["decisions"])
        return {"DECISIONS": decisions, **dict(sorted(events.items()))}

    def replay_dead_letters(self) -> tuple[int, int]:
        with self._transaction() as tx:
            released = tx.run(self._sql.release, {})
            left = int(tx.rows(self._sql.dead_count, {})[0]["letters"])
        return released, left


def _joined(rows: Sequence[dict[str, Any]]) -> list[Labelled]:
    """Rows of (request_id, decision, event, received_at), ordered by request_id, as
    one Labelled per decision (an event NULL: a decision without one)."""
    found: dict[str, Labelled] = {}
    for row in rows:
        item = found.get(row["request_id"])
        if item is None:
            item = found[row["request_id"]] = Labelled(json.loads(row["decision"]), [])
        if row["event"] is not None:
            item.events.append(json.loads(row["event"]))
            item.received_at.append(float(row["received_at"]))
    return list(found.values())


def _add(
    tx: Transaction, insert: str, stored: str, row: dict[str, Any], key: str, text: str
) -> Outcome:
    """Insert row unless its key is taken: then DUPLICATE when the kept text is text."""
    if tx.run(insert, row) == 1:
        return Outcome.ACCEPTED
    kept = tx.rows(stored, {key: row[key]})[0]["kept"]
    return Outcome.DUPLICATE if kept == text else Outcome.CONFLICT


def _row(record: Received | Decided) -> dict[str, Any]:
    """record's fields as statement parameters: a shallow copy (``dataclasses.asdict``
    copies every value deeply, a tenth of a Record call's cost)."""
    return {name: getattr(record, name) for name in record.__slots__}
