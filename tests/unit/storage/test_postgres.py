"""The PostgreSQL connection pool against the real server: failures become
StoreUnavailable and the pool recovers when the server is back."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sidecar.errors import StoreUnavailable
from sidecar.storage.postgres import PostgresDatabase
from tests.postgres import DSN, end_backends, fresh_schema


def test_every_pooled_connection_lost_costs_one_call() -> None:
    """All its idle connections ended (a server restart): the first call answers
    StoreUnavailable and drops the rest, the next reconnects."""
    with fresh_schema() as schema:
        database = PostgresDatabase(make_conninfo(DSN, application_name=schema), schema=schema)
        try:
            with database.transaction(), database.transaction():
                pass  # two callers at once: two connections, both back in the pool
            assert end_backends(schema) == 2
            with (
                pytest.raises(StoreUnavailable, match=f"schema {schema}"),
                database.transaction() as tx,
            ):
                tx.rows("SELECT 1 AS one", {})
            with database.transaction() as tx:
                assert tx.rows("SELECT 1 AS one", {}) == [{"one": 1}]
        finally:
            database.close()


def test_schema_is_created_when_missing() -> None:
    """A schema that does not exist yet is created, and the connections use it."""
    schema = f"storage_test_{uuid.uuid4().hex[:12]}"
    database = PostgresDatabase(DSN, schema=schema)
    try:
        with database.transaction() as tx:
            assert tx.rows("SELECT current_schema() AS s", {}) == [{"s": schema}]
    finally:
        database.close()
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
