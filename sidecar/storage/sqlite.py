"""A SQLite file as a store's database: one connection shared by a server's threads
behind a lock, WAL mode so readers in other processes do not block it,
``synchronous=FULL`` so an acknowledged write survives a power cut, and every
transaction ``BEGIN IMMEDIATE`` so processes sharing the file take the write lock
before they read what they will change."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.errors import StoreUnavailable
from sidecar.storage.sql import SQLITE, Transaction

BUSY_TIMEOUT_SECONDS = 5.0
WAL_RETRY_SECONDS = 0.005


class SqliteDatabase:
    """Opens (creating it and its directory when missing) the file at path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dialect = SQLITE
        self.where = f"SQLite {path}"
        self.duplicate: type[Exception] = sqlite3.IntegrityError
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._enable_wal()
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"SQLite {path}: {exc}") from exc
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction: committed on exit, rolled back on an exception (which
        passes through, a failure of the database's own as StoreUnavailable)."""
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

    def _enable_wal(self) -> None:
        """Switch to WAL, waiting out others: turning a new file's journal into WAL
        answers "database is locked" at once, without SQLite's busy wait, while
        another connection does the same, so processes opening one new file together
        would fail without this loop."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(WAL_RETRY_SECONDS)

    def close(self) -> None:
        with self._lock:
            self._db.close()
