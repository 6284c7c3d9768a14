"""The rollout store on one SQLite file, shared by every server process of one host."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlserve.backends.sqlite import DatabaseErrors, SqliteDatabase, in_thread, opened
from mlserve.errors import MlserveError
from mlserve.rollouts.base import (
    RolloutConflictError,
    RolloutState,
    RolloutsUnavailableError,
    WindowCounts,
)

__all__ = ["SqliteRolloutStore"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# rollouts: the latest rollout of each model (an ended one stays until the next starts).
# leases: who drives a model's rollout, until when (wall clock: shared by the processes).
# windows: one row per non-zero slot of WindowCounts.to_list() (0 requests, 1 errors, 2... the
# latency buckets), so adding is a plain upsert `n = n + excluded.n`, atomic in SQL.
SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    model    TEXT PRIMARY KEY,
    id       TEXT NOT NULL,
    status   TEXT NOT NULL,
    revision INTEGER NOT NULL,
    state    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_running ON rollouts (status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS rollout_leases (
    model      TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_windows (
    rollout_id TEXT NOT NULL,
    step       INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    slot       INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, step, version, slot)
) WITHOUT ROWID;
"""

ADD_WINDOW = (
    "INSERT INTO rollout_windows (rollout_id, step, version, slot, n) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (rollout_id, step, version, slot) DO UPDATE SET n = n + excluded.n"
)
# Take the lease when nobody has it, when it expired, or renew it when it is ours already.
ACQUIRE = (
    "INSERT INTO rollout_leases (model, holder, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (model) DO UPDATE SET holder = excluded.holder, "
    "expires_at = excluded.expires_at "
    "WHERE rollout_leases.holder = excluded.holder OR rollout_leases.expires_at <= ?"
)


def _pool(store: SqliteRolloutStore) -> Executor:
    """Where the store's blocking calls run."""
    return store._executor


# A full disk, a lock held too long, an I/O error: 503 rollouts_unavailable (the cause goes
# to the log, not the client).
_errors = DatabaseErrors(
    what="rollout store",
    message="rollouts are unavailable: the rollout store {why}",
    error=RolloutsUnavailableError,
    log=log,
)


def _state(row: Sequence[Any] | None) -> RolloutState | None:
    return None if row is None else RolloutState.from_json(row[0])


class SqliteRolloutStore:
    """RolloutStore on one SQLite file in WAL mode, shared by every server process of a host.

    Each process opens its own connections (one per store thread); blocking calls run on the
    store's own small thread pool. Every write takes the database's write lock up front (BEGIN
    IMMEDIATE) or is one statement, so create, the compare-and-set of replace and taking a
    lease are atomic across processes; other writers wait up to `busy_timeout_s`.
    synchronous=FULL: a step moved or a rollback decided survives a power cut too. Leases use
    the wall clock (`clock`), the one clock the processes share. The file must be on a local
    disk: WAL needs shared memory between the processes."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 10.0,
        threads: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db = SqliteDatabase(
            self.path,
            what="rollout store",
            busy_timeout_s=busy_timeout_s,
            synchronous="FULL",
            closed_error=lambda: RolloutsUnavailableError("the rollout store is closed"),
        )
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rolloutstore")

    # ------------------------------------------------------------------ plumbing
    @classmethod
    async def open(cls, path: Path, **kwargs: Any) -> SqliteRolloutStore:
        """Create the folder and the schema if needed (off the event loop) and return the
        store; RolloutsUnavailableError when the file cannot be opened."""
        store = cls(path, **kwargs)
        return await opened(store, store._executor)

    def initialize(self) -> None:
        """Create the database file and schema (idempotent; safe from several processes)."""
        try:
            self._db.create_schema(SCHEMA, SCHEMA_VERSION)
        except (sqlite3.DatabaseError, OSError) as exc:  # not a database, unwritable folder...
            raise _errors.unavailable(exc) from exc
        except MlserveError as exc:  # written by a newer mlserve
            raise RolloutsUnavailableError(exc.message) from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Wait for running calls, then close every connection this store opened."""
        self._db.shutdown(self._executor)

    # ------------------------------------------------------------------ blocking implementation
    @_errors.guarded
    def get_sync(self, model: str) -> RolloutState | None:
        row = (
            self._db.connection()
            .execute("SELECT state FROM rollouts WHERE model = ?", (model,))
            .fetchone()
        )
        return _state(row)

    @_errors.guarded
    def create_sync(self, state: RolloutState) -> RolloutState:
        if not state.active:
            raise ValueError(f"a new rollout must be running, not {state.status}")
        created = dataclasses.replace(state, revision=1)
        model = state.plan.model
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT id FROM rollouts WHERE model = ? AND status = 'running'", (model,)
            ).fetchone()
            if row is not None:
                raise RolloutConflictError(
                    f"model '{model}' has a running rollout already ({row[0]}); "
                    "wait for it to end or abort it first"
                )
            db.execute(
                "INSERT OR REPLACE INTO rollouts (model, id, status, revision, state) "
                "VALUES (?, ?, ?, 1, ?)",
                (model, created.id, created.status, created.to_json()),
            )
            # The windows of the rollout this one replaces (and any a late writer added for a
            # rollout already replaced): nothing reads them any more.
            db.execute(
                "DELETE FROM rollout_windows WHERE rollout_id NOT IN (SELECT id FROM rollouts)"
            )
        return created

    @_errors.guarded
    def replace_sync(self, state: RolloutState, *, expected_revision: int) -> RolloutState | None:
        written = dataclasses.replace(state, revision=expected_revision + 1)
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE rollouts SET status = ?, revision = ?, state = ? "
                "WHERE model = ? AND id = ? AND revision = ?",
                (
                    written.status,
                    written.revision,
                    written.to_json(),
                    state.plan.model,
                    state.id,
                    expected_revision,
                ),
            ).rowcount
        return written if changed == 1 else None

    @_errors.guarded
    def running_sync(self) -> list[RolloutState]:
        rows = (
            self._db.connection()
            .execute("SELECT state FROM rollouts WHERE status = 'running' ORDER BY model")
            .fetchall()
        )
        return [RolloutState.from_json(row[0]) for row in rows]

    @_errors.guarded
    def acquire_sync(self, model: str, holder: str, ttl_s: float) -> bool:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = self._clock()
        with self._db.transaction() as db:
            return db.execute(ACQUIRE, (model, holder, now + ttl_s, now)).rowcount == 1

    @_errors.guarded
    def release_sync(self, model: str, holder: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM rollout_leases WHERE model = ? AND holder = ?", (model, holder))

    @_errors.guarded
    def add_windows_sync(self, items: Sequence[tuple[str, int, int, WindowCounts]]) -> None:
        rows = [
            (rollout_id, step, version, slot, n)
            for rollout_id, step, version, counts in items
            for slot, n in enumerate(counts.to_list())
            if n
        ]
        if not rows:
            return
        with self._db.transaction() as db:
            db.executemany(ADD_WINDOW, rows)

    @_errors.guarded
    def windows_sync(self, rollout_id: str, step: int) -> dict[int, WindowCounts]:
        rows = (
            self._db.connection()
            .execute(
                "SELECT version, slot, n FROM rollout_windows WHERE rollout_id = ? AND step = ?",
                (rollout_id, step),
            )
            .fetchall()
        )
        slots: dict[int, list[int]] = {}
        for version, slot, n in rows:
            values = slots.setdefault(version, [0, 0])
            values.extend([0] * (slot + 1 - len(values)))
            values[slot] = n
        return {version: WindowCounts.from_list(values) for version, values in slots.items()}

    # ------------------------------------------------------------------ RolloutStore (async)
    get = in_thread(get_sync, pool=_pool)
    create = in_thread(create_sync, pool=_pool)
    replace = in_thread(replace_sync, pool=_pool)
    running = in_thread(running_sync, pool=_pool)
    acquire = in_thread(acquire_sync, pool=_pool)
    release = in_thread(release_sync, pool=_pool)
    add_windows = in_thread(add_windows_sync, pool=_pool)
    windows = in_thread(windows_sync, pool=_pool)
