"""What the SQL stores share whatever the driver: the part of a DB-API cursor they
use, a Transaction that runs statements on it and returns rows as dicts, and the
rendering of ``:name`` parameters into the driver's placeholder. No connections
here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

# ``:name``, but not the second colon of a ``::type`` cast.
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def render_parameters(statement: str, placeholder: str) -> str:
    """statement with each ``:name`` written as placeholder (``%({name})s``, ...)."""
    return _PARAMETER.sub(lambda m: placeholder.format(name=m[1]), statement)


class DbCursor(Protocol):
    """The part of a DB-API cursor the stores use (sqlite3 and psycopg both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, statement: str, parameters: Mapping[str, Any], /) -> object: ...

    def executemany(self, statement: str, parameters: Iterable[Mapping[str, Any]], /) -> object: ...

    def fetchall(self) -> Sequence[Any]: ...


class Database(Protocol):
    """Where a store's transactions run (SqliteDatabase, PostgresDatabase)."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Begin a transaction; commit on exit, roll back on an exception."""
        ...

    def close(self) -> None: ...


class Transaction:
    """Statements inside one open transaction; rows come back as dicts."""

    def __init__(self, cursor: DbCursor) -> None:
        self._cursor = cursor

    def rows(self, statement: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._cursor.execute(statement, parameters)
        return [dict(row) for row in self._cursor.fetchall()]

    def run(self, statement: str, parameters: Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        self._cursor.execute(statement, parameters)
        return self._cursor.rowcount

    def run_many(self, statement: str, parameters: Iterable[Mapping[str, Any]]) -> None:
        """Run a statement once for each set of parameters."""
        self._cursor.executemany(statement, parameters)
