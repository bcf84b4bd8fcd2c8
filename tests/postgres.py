"""A PostgreSQL schema of its own for each test that needs the database.

The server is the one named by HITL_TEST_POSTGRES_DSN (default: the local server,
trust auth, database ``test``). When it cannot be reached the test is skipped,
saying why; on this project's machines and in CI it is up (.ci/run starts it)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
