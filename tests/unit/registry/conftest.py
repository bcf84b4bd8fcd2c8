"""Registry store fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sidecar.registry.store import RegistryStore
from sidecar.registry.stores.sql import SqlStore
from sidecar.storage.postgres import PostgresDatabase
from sidecar.storage.sql import Transaction
from sidecar.storage.sqlite import SqliteDatabase
from tests.postgres import DSN, fresh_schema


@dataclass(frozen=True)
class Backend:
    """One fresh database and the ways a test reaches it."""

    name: str
    open: Callable[[], SqlStore]  # another store on it (more than one: replicas sharing it)
    transaction: Callable[[], AbstractContextManager[Transaction]]  # raw SQL, beside the store
    driver_error: type[Exception]  # what the driver raises when the database refuses


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with ExitStack() as stack:
        database: Callable[[], SqliteDatabase | PostgresDatabase]
        if request.param == "sqlite":
            path = tmp_path / "registry.db"
            database = partial(SqliteDatabase, path)
            driver_error: type[Exception] = sqlite3.Error
        else:
            schema = stack.enter_context(fresh_schema())
            # Named so that a test can find (and end) the store's connections.
            dsn = make_conninfo(DSN, application_name=schema)
            database = partial(PostgresDatabase, dsn, schema=schema)
            driver_error = psycopg.Error
        opened: list[SqlStore] = []

        def open_one() -> SqlStore:
            opened.append(SqlStore(database()))
            return opened[-1]

        @contextmanager
        def transaction() -> Iterator[Transaction]:
            db = database()
            try:
                with db.transaction() as tx:
                    yield tx
            finally:
                db.close()

        yield Backend(request.param, open_one, transaction, driver_error)
        for store in opened:
            store.close()


@pytest.fixture
def store(backend: Backend) -> RegistryStore:
    return backend.open()  # also checks, for mypy, that each store is a RegistryStore
