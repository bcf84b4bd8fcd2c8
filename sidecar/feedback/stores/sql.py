"""The feedback store's SQL, written once for SQLite and PostgreSQL (rendered for each
by ``sidecar.storage.sql``), and the store logic both run.

An event is inserted ``ON CONFLICT (feedback_id) DO NOTHING``: of two replicas
adding one id at once, one row is written and the other finds it, then compares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sidecar.feedback.records import Outcome, Received
from sidecar.feedback.stores.migrations import SCHEMA
from sidecar.storage.sql import Database, Dialect, render_all
from sidecar.storage.store import ServiceStore

COLUMNS = "feedback_id, request_id, model, type, event, sender, received_at"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement's template; ``statements`` renders them for one dialect."""

    insert: str = """
        INSERT INTO feedback_events ({columns})
        VALUES (:feedback_id, :request_id, :model, :type, :event, :sender, :received_at)
        ON CONFLICT (feedback_id) DO NOTHING"""
    stored: str = "SELECT event FROM feedback_events WHERE feedback_id = :feedback_id"
    history: str = """
        SELECT {columns} FROM feedback_events WHERE request_id = :request_id ORDER BY seq"""


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for dialect."""
    return render_all(Statements(), dialect, columns=COLUMNS)


class SqlStore(ServiceStore):
    """The FeedbackStore logic on db: a SQLite file (the default), or PostgreSQL for
    replicas sharing one database."""

    def __init__(self, db: Database) -> None:
        self._sql = statements(db.dialect)
        super().__init__(db, SCHEMA)

    def add(self, events: Sequence[Received]) -> list[Outcome]:
        outcomes = []
        with self._transaction() as tx:
            for event in events:
                if tx.run(self._sql.insert, asdict(event)) == 1:
                    outcomes.append(Outcome.ACCEPTED)
                    continue
                stored = tx.rows(self._sql.stored, {"feedback_id": event.feedback_id})
                same = stored[0]["event"] == event.event
                outcomes.append(Outcome.DUPLICATE if same else Outcome.CONFLICT)
        return outcomes

    def history(self, request_id: str) -> list[Received]:
        return [
            Received(**row) for row in self._rows(self._sql.history, {"request_id": request_id})
        ]
