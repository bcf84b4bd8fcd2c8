"""The review store on a SQLite file (the default): one connection shared by the
server's threads behind a lock, WAL mode so readers in other processes do not block
it, ``synchronous=FULL`` so an acknowledged Submit survives a power cut, and every
transaction ``BEGIN IMMEDIATE`` so processes sharing the file take the write lock
before they read what they will change (two never claim one item)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.errors import StoreUnavailable
from sidecar.review.stores.sql import SQLITE, SqlStore, Transaction, statements

BUSY_TIMEOUT_SECONDS = 5.0


class SqliteStore(SqlStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"SQLite {path}: {exc}") from exc
        self._lock = threading.Lock()
        super().__init__(statements(SQLITE))

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc
            try:
                yield Transaction(self._db.cursor())
            except sqlite3.OperationalError as exc:
                self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
