"""The registry store on PostgreSQL (psycopg 3), for replicas that share one database;
``sidecar.storage.postgres`` keeps its connections. Transactions run at READ
COMMITTED; a revision is written only with ``registry_head`` locked ``FOR UPDATE``,
so of two replicas approving at once the second waits, then sees the head moved."""

from __future__ import annotations

from psycopg import errors

from sidecar.registry.stores.sql import SqlStore
from sidecar.storage.postgres import PostgresDatabase
from sidecar.storage.sql import POSTGRES


class PostgresStore(SqlStore):
    """``schema`` (optional) holds the tables instead of the connection's default
    search_path; it is created when missing (tests use one per test)."""

    def __init__(self, dsn: str, *, schema: str = "") -> None:
        db = PostgresDatabase(dsn, schema=schema)
        super().__init__(db, POSTGRES, where=db.where, duplicate=errors.UniqueViolation)
