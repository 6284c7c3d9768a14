"""One SQLite file in WAL mode, shared by the threads of a process and by several processes:
the plumbing the async-job and feedback stores have in common (a connection per thread,
explicit transactions, the schema and its version, closing every connection)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from mlserve.errors import MlserveError


class SqliteDatabase:
    """Connections are opened lazily, one per thread (a connection is never shared between
    threads), in autocommit mode: every transaction is explicit."""

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        busy_timeout_s: float,
        synchronous: str,
        closed_error: Callable[[], Exception],
        rows_as_mappings: bool = False,
        page_size: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what  # "job store", "feedback store": names it in error messages
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self.closed_error = closed_error
        self.rows_as_mappings = rows_as_mappings
        self.page_size = page_size
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise self.closed_error()
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # close() runs on another thread
            )
            if self.rows_as_mappings:
                db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if self.page_size is not None:  # takes effect on a new file only (before WAL)
                db.execute(f"PRAGMA page_size = {int(self.page_size)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed, or rolled back on any error."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state."""
        db = self.connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def create_schema(self, schema: str, version: int) -> None:
        """Create the folder, the file and the schema if needed (idempotent; safe from several
        processes); refuse a file written by a newer schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > version:
                raise MlserveError(
                    f"{self.what} {self.path} was written by a newer mlserve "
                    f"(schema {found}, this one knows {version})"
                )
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")

    def stop_connecting(self) -> None:
        """Threads without a connection get closed_error() from now on (calls already running
        keep theirs until close())."""
        self._closed = True

    def close(self) -> None:
        """Close every connection opened; later calls raise closed_error()."""
        self._closed = True
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
