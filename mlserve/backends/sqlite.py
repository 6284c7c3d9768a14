"""One SQLite file in WAL mode, shared by the threads of a process and by several processes:
the plumbing the SQLite stores (jobs, feedback, rollouts) have in common (a connection per
thread, explicit transactions, the schema and its version, closing every connection, running
the blocking calls on the store's own threads, and telling a client that the database cannot
be used now)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from mlserve.errors import MlserveError

__all__ = ["DatabaseErrors", "Initializable", "SqliteDatabase", "in_thread", "opened", "run_in"]

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


class Initializable(Protocol):
    """A store that `opened` can set up: a blocking initialize, an async close."""

    def initialize(self) -> None: ...

    async def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=Initializable)


async def run_in(executor: Executor, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Await the blocking `fn(*args, **kwargs)` run on one of `executor`'s threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


async def opened(store: StoreT, pool: Executor) -> StoreT:
    """`store` once `store.initialize()` (the folder, the file, the schema) has run on `pool`,
    off the event loop; closed again when that fails."""
    try:
        await run_in(pool, store.initialize)
    except BaseException:
        await store.close()
        raise
    return store


def in_thread(
    fn: Callable[Concatenate[S, P], R], *, pool: Callable[[S], Executor]
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The coroutine method that runs the blocking method `fn` on the store's thread pool
    `pool(store)`, with fn's signature: `get = in_thread(get_sync, pool=...)` in a class body
    is how a SQLite store offers its blocking calls to the event loop."""

    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in(pool(self), fn, self, *args, **kwargs)

    method.__name__ = fn.__name__.removesuffix("_sync")
    method.__qualname__ = fn.__qualname__.removesuffix("_sync")
    method.__doc__ = fn.__doc__
    return method


def _name(error: BaseException) -> str:
    return getattr(error, "sqlite_errorname", "")


# Why a database cannot be used, most telling first, and the errors that say so.
_REASONS: tuple[tuple[str, Callable[[BaseException], bool]], ...] = (
    (
        "has no room left: its disk is full",
        lambda e: _name(e) == "SQLITE_FULL" or getattr(e, "errno", None) == errno.ENOSPC,
    ),
    ("is busy (locked by another process)", lambda e: _name(e) in {"SQLITE_BUSY", "SQLITE_LOCKED"}),
    (
        "is read-only",
        lambda e: _name(e) == "SQLITE_READONLY" or getattr(e, "errno", None) == errno.EROFS,
    ),
)


def _why(exc: BaseException) -> tuple[str, BaseException]:
    """Why the database cannot be used (a full disk, a lock, read-only...), and the error that
    says so (else `exc`). The cause may be chained below what was raised (an OSError's
    context, say): look down a few links."""
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 5:
        causes.append(cause)
        cause = cause.__context__
    for why, says in _REASONS:
        for cause in causes:
            if says(cause):
                return why, cause
    return f"failed ({_name(exc) or type(exc).__name__})", exc


@dataclasses.dataclass(frozen=True)
class DatabaseErrors:
    """How one store reports a database that cannot be read or written: as its own error (a
    503, like its Redis store that is down, never a 500) saying why, the cause in `log` only.

    `what` names the store in the log line ("the job store is busy (...): <cause>"); `message`
    is what the client is told, with `{why}` for the reason ("...: the job store {why}")."""

    what: str
    message: str
    error: Callable[[str], MlserveError]
    log: logging.Logger

    def unavailable(self, exc: BaseException) -> MlserveError:
        """The store's error for `exc`, logged."""
        why, cause = _why(exc)
        self.log.error("the %s %s: %s: %s", self.what, why, type(cause).__name__, cause)
        return self.error(self.message.format(why=why))

    def guarded(self, fn: Callable[P, R]) -> Callable[P, R]:
        """`fn` with the database's operational errors (a full disk, a lock held too long, an
        I/O error) raised as the store's error: `@errors.guarded` on a store's blocking
        method."""

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except (sqlite3.OperationalError, OSError) as exc:
                raise self.unavailable(exc) from exc

        return call


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
        """A write transaction (BEGIN IMMEDIATE): committed, or rolled back on any error (a
        failed COMMIT too); the error raised is always the one that ended it (see _end)."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            self._end(db, exc)
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state."""
        db = self.connection()
        db.execute("BEGIN")
        try:
            yield db
        except BaseException as exc:
            self._end(db, exc)
            raise
        db.execute("COMMIT")

    def _end(self, db: sqlite3.Connection, error: BaseException) -> None:
        """Roll back what is left of the transaction `error` interrupted, without hiding
        `error`. SQLite may have rolled back already (it does on SQLITE_FULL and some I/O
        errors): a ROLLBACK then fails with "no transaction is active", and raising that would
        replace the error that says what happened (a full disk must reach the store's error
        translation as SQLITE_FULL). A ROLLBACK that fails is attached to `error` as a note;
        a connection still in its transaction after that is closed (a new one is opened on the
        next call), never left stuck in it."""
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as failed:
            error.add_note(f"the ROLLBACK that followed failed: {type(failed).__name__}: {failed}")
            if db.in_transaction:
                self._discard(db)

    def _discard(self, db: sqlite3.Connection) -> None:
        """Close this thread's connection `db`; the thread opens a new one when it next needs
        one."""
        if getattr(self._local, "db", None) is db:
            self._local.db = None
        with self._lock:
            if db in self._connections:
                self._connections.remove(db)
        with contextlib.suppress(sqlite3.Error):
            db.close()

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

    def shutdown(self, *pools: Executor) -> None:
        """Wait for the calls running on the store's thread `pools` (new ones are refused),
        then close every connection."""
        self.stop_connecting()
        for pool in pools:
            pool.shutdown(wait=True)
        self.close()

    def close(self) -> None:
        """Close every connection opened; later calls raise closed_error()."""
        self._closed = True
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
