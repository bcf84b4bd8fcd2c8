"""A PostgreSQL schema of its own for each test that needs the database.

The server is the one named by HITL_TEST_POSTGRES_DSN (default: the local server,
trust auth, database ``test``). When it cannot be reached the test is skipped,
saying why; on this project's machines and in CI it is up (.ci/run starts it)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from sidecar.storage.sql import Database

Store = TypeVar("Store")

DSN = os.environ.get("HITL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def unreachable() -> str:
    """Why PostgreSQL cannot be used ('' when it can)."""
    import psycopg

    try:
        with psycopg.connect(DSN, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {DSN}: {exc}"
    return ""


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new, empty schema no other test uses; dropped with its tables afterwards.
    (A DSN reaches it with ``options=-csearch_path=NAME``, see ``dsn_for``.)"""
    import psycopg

    if why := unreachable():
        pytest.skip(why)
    schema = f"review_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(DSN, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(DSN, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def end_backends(application_name: str) -> int:
    """End the server processes serving application_name's connections; how many."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def dsn_for(schema: str) -> str:
    """DSN as a URI whose connections use schema (for processes given only a --db)."""
    return f"{DSN}?options=-csearch_path%3D{schema}"


@contextmanager
def opened_stores(
    kind: str, path: Path, make: Callable[[Database], Store]
) -> Iterator[Callable[[], Store]]:
    """Opens stores (make on a connection of their own) on one fresh database, a
    SQLite file at path or a fresh PostgreSQL schema (kind ``postgresql``): more than
    one are replicas sharing it. All are closed afterwards."""
    from sidecar.storage.postgres import PostgresDatabase
    from sidecar.storage.sqlite import SqliteDatabase

    with ExitStack() as stack:
        database: Callable[[], Database]
        if kind == "sqlite":
            database = partial(SqliteDatabase, path)
        else:
            database = partial(PostgresDatabase, DSN, schema=stack.enter_context(fresh_schema()))
        opened: list[Store] = []

        def open_one() -> Store:
            opened.append(make(database()))
            return opened[-1]

        yield open_one
        for store in opened:
            store.close()  # type: ignore[attr-defined]
