"""Numbered schema migrations, one mechanism for every store.

A store's schema is a sequence of migrations numbered from 1, applied in order when
the store opens, in one transaction, each recorded in ``<store>_migrations``. On
PostgreSQL the transaction first takes an advisory lock of the store's own, so
replicas starting together queue and the first one migrates. A database recording a
migration this version does not know (a newer version migrated it) is refused.

Never edit or renumber a migration that has shipped: add the next one. Statements
are templates (``sql.render``): ``{serial_key}``, ``{blob}`` and ``{timestamp}`` name
the dialect's column types; statements only one database understands sit in that
dialect's tuple."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.errors import ConfigError
from sidecar.storage.sql import Dialect, Transaction, render


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    summary: str
    statements: tuple[str, ...]  # for both dialects, in order
    sqlite: tuple[str, ...] = ()  # then these on SQLite only
    postgresql: tuple[str, ...] = ()  # or these on PostgreSQL only

    def for_dialect(self, name: str) -> tuple[str, ...]:
        extra = {"sqlite": self.sqlite, "postgresql": self.postgresql}[name]
        return self.statements + extra


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's migrations: ``name`` names the table recording them (and the store in
    messages); ``lock_key`` is its PostgreSQL advisory lock, one per store."""

    name: str
    lock_key: int
    migrations: Sequence[Migration]


_CREATE = """
    CREATE TABLE IF NOT EXISTS {name}_migrations (
        version INTEGER PRIMARY KEY,
        summary TEXT NOT NULL,
        applied_at {timestamp}
    )"""
_APPLIED = "SELECT version FROM {name}_migrations ORDER BY version"
_RECORD = "INSERT INTO {name}_migrations (version, summary) VALUES (:version, :summary)"


def migrate(tx: Transaction, dialect: Dialect, schema: Schema, where: str) -> list[int]:
    """Apply, in order, the migrations the database lacks; the versions applied.
    ConfigError when it records one this version does not know."""
    if dialect.advisory_lock:
        tx.run(dialect.advisory_lock.format(key=schema.lock_key), {})
    tx.run(render(_CREATE, dialect, name=schema.name), {})
    applied = {int(row["version"]) for row in tx.rows(_APPLIED.format(name=schema.name), {})}
    ordered = sorted(schema.migrations, key=lambda m: m.version)
    known = {migration.version for migration in ordered}
    if unknown := sorted(applied - known):
        raise ConfigError(
            f"{where}: the {schema.name} database records schema migration(s) "
            f"{', '.join(map(str, unknown))}, which this version does not know "
            f"(it knows 1 to {max(known)}): a newer hitl-sidecar migrated it; run that one"
        )
    record = render(_RECORD, dialect, name=schema.name)
    done = []
    for migration in ordered:
        if migration.version in applied:
            continue
        for statement in migration.for_dialect(dialect.name):
            tx.run(render(statement, dialect), {})
        tx.run(record, {"version": migration.version, "summary": migration.summary})
        done.append(migration.version)
    return done
