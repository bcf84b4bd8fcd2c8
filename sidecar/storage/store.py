"""What every service's SQL store shares: its database, its numbered migrations
applied when it opens (and the database closed again if they fail), transactions,
and the principals who may call the service (``<service>_principals``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from sidecar.auth import Principal
from sidecar.errors import Conflict
from sidecar.storage.migrations import Schema, migrate
from sidecar.storage.principals import PrincipalTable
from sidecar.storage.sql import Database, Transaction
from sidecar.storage.sqlite import SqliteDatabase
from sidecar.storage.url import is_postgres, sqlite_path


def open_database(url: str) -> Database:
    """``postgresql://...`` (a libpq URI) or ``sqlite:PATH`` (or a bare path). The
    PostgreSQL driver is imported only when asked for: psycopg is an optional extra."""
    if is_postgres(url):
        from sidecar.storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    return SqliteDatabase(sqlite_path(url))


class ServiceStore:
    """A store on db whose tables schema's migrations make."""

    def __init__(self, db: Database, schema: Schema) -> None:
        self.database = db
        self._principals = PrincipalTable(f"{schema.name}_principals", db.dialect)
        try:
            with self._transaction() as tx:
                self.migrated = migrate(tx, db.dialect, schema, db.where)
        except BaseException:
            self.close()
            raise

    def _transaction(self) -> AbstractContextManager[Transaction]:
        return self.database.transaction()

    def _rows(self, statement: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """statement's rows, read in a transaction of its own."""
        with self._transaction() as tx:
            return tx.rows(statement, parameters)

    def close(self) -> None:
        self.database.close()

    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None:
        """Create or replace the principal called name. token_sha256 (hex, may be
        empty) and cert_subject (may be empty) are its credentials, each naming at
        most one principal: Conflict when another holds it."""
        try:
            with self._transaction() as tx:
                self._principals.add(tx, name, roles, token_sha256, cert_subject, now)
        except self.database.duplicate as exc:
            # Another transaction gave the credential away between our check and write.
            raise Conflict(f"principal {name!r}: its credential is held by another") from exc

    def principal_for_token(self, token_sha256: str) -> Principal | None:
        with self._transaction() as tx:
            return self._principals.by_token(tx, token_sha256)

    def principal_for_subject(self, cert_subject: str) -> Principal | None:
        with self._transaction() as tx:
            return self._principals.by_subject(tx, cert_subject)

    def principals(self) -> list[Principal]:
        with self._transaction() as tx:
            return self._principals.all(tx)
