"""The review store's schema under the shared migration mechanism, on SQLite and
PostgreSQL: a new database is migrated, a database made before the store had
migrations is adopted with its items, and one from a newer version is refused."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from sidecar.clock import FakeClock
from sidecar.errors import ConfigError
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.queue import ReviewQueue
from sidecar.review.sla import Sla
from sidecar.review.stores.migrations import MIGRATIONS
from sidecar.review.stores.sql import SqlStore
from tests.escalations import escalation
from tests.unit.review.conftest import OpenStore

LATEST = [m.version for m in MIGRATIONS]


def opened(open_store: OpenStore) -> SqlStore:
    store = open_store()
    assert isinstance(store, SqlStore)
    return store


def rows(store: SqlStore, statement: str) -> list[dict[str, Any]]:
    with store._transaction() as tx:
        return tx.rows(statement, {})


def test_migrations_are_numbered_from_one() -> None:
    assert list(range(1, len(LATEST) + 1)) == LATEST


def test_a_new_database_is_migrated_once(open_store: OpenStore) -> None:
    """The first open applies and records every migration; the next applies none."""
    first = opened(open_store)
    assert first.migrated == LATEST
    recorded = rows(first, "SELECT version FROM review_migrations ORDER BY version")
    assert [row["version"] for row in recorded] == LATEST
    assert opened(open_store).migrated == []


def test_a_database_from_before_migrations_is_adopted(open_store: OpenStore) -> None:
    """A database with the items table but no record of migrations (as the store made
    it before it had migrations) keeps its items; every migration is recorded."""
    store = opened(open_store)
    meters = MeterProvider().get_meter("test")
    queue = ReviewQueue(store, FakeClock(), Sla(), ReviewMetrics(meters))
    queue.submit([escalation("kept")])
    with store._transaction() as tx:  # back to the shape of a database made then
        for undo in [
            "DROP TABLE review_events",
            "DROP TABLE review_migrations",
            "DROP TABLE review_reverts",
            "DROP TABLE review_principals",
            "DROP INDEX review_items_claimed",
            "ALTER TABLE review_items DROP COLUMN acted_by",
            "DROP INDEX review_items_unforwarded",
            "ALTER TABLE review_items DROP COLUMN forwarded_at",
            "ALTER TABLE review_items DROP COLUMN evidence",
            "DROP TABLE review_answers",
            "ALTER TABLE review_items DROP COLUMN reviews_required",
            "ALTER TABLE review_items DROP COLUMN consensus",
            "ALTER TABLE review_items DROP COLUMN answered",
            "ALTER TABLE review_items DROP COLUMN agreement",
        ]:
            tx.run(undo, {})
    adopted = opened(open_store)
    assert adopted.migrated == LATEST
    assert rows(adopted, "SELECT escalation_id FROM review_items") == [{"escalation_id": "kept"}]


def test_a_database_from_a_newer_version_is_refused(open_store: OpenStore) -> None:
    """A recorded migration this version does not know stops the open, naming it."""
    later = len(LATEST) + 1
    with opened(open_store)._transaction() as tx:
        insert = f"INSERT INTO review_migrations (version, summary) VALUES ({later}, 'x')"  # noqa: S608
        tx.run(insert, {})
    with pytest.raises(
        ConfigError, match=f"review database records schema migration\\(s\\) {later}"
    ):
        open_store()
