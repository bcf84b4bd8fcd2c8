"""What the SQL stores share whatever the driver: the two dialects, the rendering of
a statement for one (its ``:name`` parameters into the driver's placeholder, the
dialect's fragments into the template), the part of a DB-API cursor the stores use,
and a Transaction that runs statements on it and returns rows as dicts. No
connections here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# ``:name``, but not the second colon of a ``::type`` cast.
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def render_parameters(statement: str, placeholder: str) -> str:
    """statement with each ``:name`` written as placeholder (``%({name})s``, ...)."""
    return _PARAMETER.sub(lambda m: placeholder.format(name=m[1]), statement)


Templates = TypeVar("Templates", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between SQLite and PostgreSQL in the stores' SQL."""

    name: str
    parameter: str  # how ``:name`` is written for the driver, with {name}
    row_lock: str  # appended to reads of a row the transaction will change
    skip_locked: str  # appended to a choice of row that others may be choosing too
    advisory_lock: str  # with {key}: a lock held to the end of the transaction
    serial_key: str  # an integer primary key the database numbers
    blob: str  # a column of bytes
    timestamp: str  # a column the database fills with its current time


SQLITE = Dialect(
    "sqlite",
    ":{name}",
    "",  # BEGIN IMMEDIATE already holds the database's write lock
    "",
    "",
    "INTEGER PRIMARY KEY",
    "BLOB",
    "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP",
)
POSTGRES = Dialect(
    "postgresql",
    "%({name})s",
    "FOR UPDATE",
    "FOR UPDATE SKIP LOCKED",
    "SELECT pg_advisory_xact_lock({key})",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "BYTEA",
    "TIMESTAMPTZ NOT NULL DEFAULT now()",
)


def render(template: str, dialect: Dialect, **fragments: str) -> str:
    """template with the dialect's fragments and the store's own (``{columns}``, ...)
    filled in, and its parameters written for the dialect's driver."""
    text = template.format(
        row_lock=dialect.row_lock,
        skip_locked=dialect.skip_locked,
        serial_key=dialect.serial_key,
        blob=dialect.blob,
        timestamp=dialect.timestamp,
        **fragments,
    )
    return render_parameters(text, dialect.parameter)


def render_all(templates: Templates, dialect: Dialect, **fragments: str) -> Templates:
    """templates (a dataclass whose every field is a statement's template) with each
    rendered as ``render`` does."""
    return replace(
        templates,
        **{
            item.name: render(getattr(templates, item.name), dialect, **fragments)
            for item in fields(templates)
        },
    )


class DbCursor(Protocol):
    """The part of a DB-API cursor the stores use (sqlite3 and psycopg both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, statement: str, parameters: Mapping[str, Any], /) -> object: ...

    def executemany(self, statement: str, parameters: Iterable[Mapping[str, Any]], /) -> object: ...

    def fetchall(self) -> Sequence[Any]: ...


class Database(Protocol):
    """Where a store's transactions run (SqliteDatabase, PostgresDatabase): its
    dialect, ``where`` naming it in messages, and ``duplicate``, the driver's error
    for a unique index refusing a row."""

    dialect: Dialect
    where: str
    duplicate: type[Exception]

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
