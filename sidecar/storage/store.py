"""What every service's SQL store shares: its database, its numbered migrations
applied when it opens (and the database closed again if they fail), transactions,
and the principals who may call the service (``<service>_principals``)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sidecar.auth import Principal
from sidecar.errors import Conflict
from sidecar.storage.migrations import Schema, migrate
from sidecar.storage.principals import PrincipalTable
from sidecar.storage.sql import Database, Dialect, Transaction


class ServiceStore:
    """``duplicate`` is the driver's unique-key error; ``where`` names the database in
    messages."""

    def __init__(
        self,
        db: Database,
        dialect: Dialect,
        schema: Schema,
        *,
        where: str,
        duplicate: type[Exception],
    ) -> None:
        self._db = db
        self._principals = PrincipalTable(f"{schema.name}_principals", dialect)
        self._duplicate = duplicate
        try:
            with self._transaction() as tx:
                self.migrated = migrate(tx, dialect, schema, where)
        except BaseException:
            self.close()
            raise

    def _transaction(self) -> AbstractContextManager[Transaction]:
        return self._db.transaction()

    def close(self) -> None:
        self._db.close()

    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None:
        """Create or replace the principal called name. token_sha256 (hex, may be
        empty) and cert_subject (may be empty) are its credentials, each naming at
        most one principal: Conflict when another holds it."""
        try:
            with self._transaction() as tx:
                self._principals.add(tx, name, roles, token_sha256, cert_subject, now)
        except self._duplicate as exc:
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
