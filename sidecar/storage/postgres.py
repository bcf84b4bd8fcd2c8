"""A PostgreSQL database (psycopg 3) as a store's database, for replicas that share it.

Connections are kept in a small pool, one per concurrent caller (the gRPC server's
thread pool bounds how many), each in autocommit mode with explicit transactions.
A connection that fails is dropped and the call answers StoreUnavailable; the next
call connects afresh. When a connection broke (the server went away or ended it),
the idle ones are dropped as well: they most likely broke with it, and each would
otherwise fail one more caller before the pool recovered."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from sidecar.errors import StoreUnavailable
from sidecar.storage.sql import POSTGRES, Transaction

CONNECT_TIMEOUT_SECONDS = 5
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

Connection = psycopg.Connection[dict[str, Any]]


class PostgresDatabase:
    """``schema`` (optional) holds the store's tables instead of the connection's
    default search_path; it is created when missing (tests use one per test)."""

    def __init__(self, dsn: str, *, schema: str = "") -> None:
        if schema and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        self._conninfo = make_conninfo(dsn, options=f"-c search_path={schema}") if schema else dsn
        self.where = describe(dsn) + (f" schema {schema}" if schema else "")
        self.dialect = POSTGRES
        self.duplicate: type[Exception] = errors.UniqueViolation
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._closed = False
        if schema:
            self._create_schema(schema)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction: committed on exit, rolled back on an exception (which passes
        through, a failure of the connection or server as StoreUnavailable)."""
        connection = self._checkout()
        try:
            with connection.transaction():
                yield Transaction(connection.cursor())
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.where}: {exc}") from exc
        finally:
            self._checkin(connection)

    def close(self) -> None:
        """Close the idle connections, and each busy one as its caller returns it."""
        self._closed = True
        self._discard_idle()

    def _create_schema(self, schema: str) -> None:
        create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        try:
            with self.transaction() as tx:
                tx.run(create.as_string(), {})
        except errors.UniqueViolation:
            pass  # a replica starting at the same moment created it first

    def _checkout(self) -> Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        try:
            return psycopg.connect(
                self._conninfo,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.where}: {exc}") from exc

    def _checkin(self, connection: Connection) -> None:
        if connection.broken:
            self._discard_idle()
        idle = connection.info.transaction_status == TransactionStatus.IDLE
        if self._closed or connection.closed or not idle:
            connection.close()
        else:
            self._idle.put(connection)

    def _discard_idle(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def describe(dsn: str) -> str:
    """Where a DSN points, without its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable DSN)"
    return "PostgreSQL {}:{}/{}".format(
        parts.get("host", "localhost"), parts.get("port", 5432), parts.get("dbname", "")
    )
