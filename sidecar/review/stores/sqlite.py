"""The review store on a SQLite file (the default; ``sidecar.storage.sqlite`` says how
it is opened and written). Every transaction is ``BEGIN IMMEDIATE``, so processes
sharing the file take the write lock before they read what they will change: two
never claim one item."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sidecar.review.stores.sql import SqlStore
from sidecar.storage.sql import SQLITE
from sidecar.storage.sqlite import SqliteDatabase


class SqliteStore(SqlStore):
    def __init__(self, path: Path) -> None:
        super().__init__(
            SqliteDatabase(path),
            SQLITE,
            where=f"SQLite {path}",
            duplicate=sqlite3.IntegrityError,
        )
