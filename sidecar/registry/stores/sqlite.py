"""The registry store on a SQLite file (the embedded default; ``sidecar.storage.sqlite``
says how it is opened and written). Every transaction is ``BEGIN IMMEDIATE``: it holds
the file's write lock from its first read, so processes sharing the file never both
write the next revision."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sidecar.registry.stores.sql import SqlStore
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
