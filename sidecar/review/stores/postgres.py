"""The review store on PostgreSQL (psycopg 3), for replicas that share one database;
``sidecar.storage.postgres`` keeps its connections. Claim chooses its item ``FOR
UPDATE SKIP LOCKED`` at READ COMMITTED: a replica skips an item another is claiming,
and never claims it twice."""

from __future__ import annotations

from psycopg import errors

from sidecar.review.stores.sql import SqlStore
from sidecar.storage.postgres import PostgresDatabase
from sidecar.storage.sql import POSTGRES


class PostgresStore(SqlStore):
    """``schema`` (optional) holds the table instead of the connection's default
    search_path; it is created when missing (tests use one per test)."""

    def __init__(self, dsn: str, *, schema: str = "") -> None:
        db = PostgresDatabase(dsn, schema=schema)
        super().__init__(db, POSTGRES, where=db.where, duplicate=errors.UniqueViolation)
