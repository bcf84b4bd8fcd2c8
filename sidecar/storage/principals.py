"""A service's principals in its own database (``<service>_principals``): who may
call it, with which roles, proved by which credential. Shared by every store with
callers to authenticate; each runs these statements inside its own transactions.
The table itself is made by the service's migrations, from ``principal_table``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.auth import Principal
from sidecar.errors import Conflict
from sidecar.storage.sql import Dialect, Transaction, render

_COLUMNS = "name, roles"
_HOLDERS = """
    SELECT name, token_sha256, cert_subject FROM {table}
    WHERE name <> :name
      AND ((token_sha256 <> '' AND token_sha256 = :token_sha256)
           OR (cert_subject <> '' AND cert_subject = :cert_subject))
    ORDER BY name"""
_PUT = """
    INSERT INTO {table} (name, roles, token_sha256, cert_subject, created_at)
    VALUES (:name, :roles, :token_sha256, :cert_subject, :created_at)
    ON CONFLICT (name) DO UPDATE
    SET roles = excluded.roles, token_sha256 = excluded.token_sha256,
        cert_subject = excluded.cert_subject"""
_BY_TOKEN = """
    SELECT {columns} FROM {table}
    WHERE token_sha256 = :token_sha256 AND token_sha256 <> ''"""  # noqa: S105 (a query)
_BY_SUBJECT = """
    SELECT {columns} FROM {table}
    WHERE cert_subject = :cert_subject AND cert_subject <> ''"""
_ALL = "SELECT {columns} FROM {table} ORDER BY name"


def principal_table(table: str) -> tuple[str, ...]:
    """The statements of a migration that creates the principals table called table."""
    return (
        f"""CREATE TABLE {table} (
                name TEXT PRIMARY KEY,
                roles TEXT NOT NULL,
                token_sha256 TEXT NOT NULL DEFAULT '',
                cert_subject TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL
            )""",
        # Each credential names at most one principal; empty means none.
        f"""CREATE UNIQUE INDEX {table}_token
                ON {table} (token_sha256) WHERE token_sha256 <> ''""",
        f"""CREATE UNIQUE INDEX {table}_subject
                ON {table} (cert_subject) WHERE cert_subject <> ''""",
    )


class PrincipalTable:
    def __init__(self, table: str, dialect: Dialect) -> None:
        def sql(template: str) -> str:
            return render(template, dialect, table=table, columns=_COLUMNS)

        self._holders, self._put = sql(_HOLDERS), sql(_PUT)
        self._by_token, self._by_subject, self._all = sql(_BY_TOKEN), sql(_BY_SUBJECT), sql(_ALL)

    def add(
        self,
        tx: Transaction,
        name: str,
        roles: frozenset[str],
        token_sha256: str,
        cert_subject: str,
        now: float,
    ) -> None:
        """Create or replace the principal called name. Each credential names at most
        one principal: Conflict when another holds it."""
        parameters = {
            "name": name,
            "roles": ",".join(sorted(roles)),
            "token_sha256": token_sha256,
            "cert_subject": cert_subject,
            "created_at": now,
        }
        holders = tx.rows(self._holders, parameters)
        if holders:
            raise Conflict(_credential_held(name, holders[0], token_sha256))
        tx.run(self._put, parameters)

    def by_token(self, tx: Transaction, token_sha256: str) -> Principal | None:
        rows = tx.rows(self._by_token, {"token_sha256": token_sha256})
        return _principal(rows[0]) if rows else None

    def by_subject(self, tx: Transaction, cert_subject: str) -> Principal | None:
        rows = tx.rows(self._by_subject, {"cert_subject": cert_subject})
        return _principal(rows[0]) if rows else None

    def all(self, tx: Transaction) -> list[Principal]:
        return [_principal(row) for row in tx.rows(self._all, {})]


def _principal(row: Mapping[str, Any]) -> Principal:
    return Principal(row["name"], frozenset(r for r in row["roles"].split(",") if r))


def _credential_held(name: str, holder: Mapping[str, Any], token_sha256: str) -> str:
    if token_sha256 and holder["token_sha256"] == token_sha256:
        return f"principal {name!r}: that token already identifies {holder['name']!r}"
    return (
        f"principal {name!r}: cert_subject {holder['cert_subject']!r} "
        f"already identifies {holder['name']!r}"
    )
