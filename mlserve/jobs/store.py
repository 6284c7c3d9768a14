"""The durable async-job store: a JobStore protocol and its SQLite implementation (one host)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import orjson

from mlserve.backends.sqlite import SqliteDatabase
from mlserve.errors import MlserveError, NotFoundError
from mlserve.schemas import JobKind, JobStatus

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings

FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

DEFAULT_MAX_ATTEMPTS = 5
SCHEMA_VERSION = 1

P = ParamSpec("P")
R = TypeVar("R")


# ---------------------------------------------------------------------------- errors
class JobNotFoundError(NotFoundError):
    """No job with this id (never submitted, deleted, or expired and purged)."""

    code = "job_not_found"


class JobNotCompletedError(MlserveError):
    """The job's results were asked for before it completed."""

    code = "job_not_completed"
    status_code = 409

    @classmethod
    def of(cls, job: Job) -> JobNotCompletedError:
        detail = f": {job.error}" if job.error else ""
        return cls(
            f"job {job.id} is {job.status} ({job.done}/{job.total} rows done){detail}; "
            "results are available once it has completed"
        )


class JobsUnavailableError(MlserveError):
    """The job store cannot be reached (could not be opened, or its service is down)."""

    code = "jobs_unavailable"
    status_code = 503


class LeaseLostError(Exception):
    """The worker no longer holds the job: it was cancelled, deleted or taken over after the
    lease expired. Internal (never shown to clients): the worker stops working on the job."""


# ---------------------------------------------------------------------------- value objects
@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One job's row. Times are UNIX epoch seconds: leases are compared across processes,
    so they need the wall clock, not a per-process monotonic one."""

    id: str
    status: JobStatus
    model_reference: str | None
    model: str
    version: int
    kind: JobKind
    total: int
    done: int
    chunk_size: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    attempts: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def chunks(self) -> int:
        return -(-self.total // self.chunk_size)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Inputs of one chunk still to score; `start` is the index of its first row in the job."""

    index: int
    start: int
    inputs: list[Any]


@dataclass(frozen=True, slots=True)
class ResultPage:
    job: Job
    offset: int
    items: list[dict[str, Any]]

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.items)
        return end if self.items and end < self.job.total else None


# ---------------------------------------------------------------------------- the interface
class JobStore(Protocol):
    """Where jobs, their inputs and their results live, shared by every process that serves.

    All methods are coroutines so that a network-backed store (Redis) can implement them with
    an asyncio client; the SQLite store runs its blocking calls on its own threads. A worker
    owns a job only while it holds the job's lease: it claims the job, renews the lease while
    it works, and every write it makes is checked against the lease (LeaseLostError)."""

    chunk_size: int

    async def submit(
        self,
        *,
        model_reference: str | None,
        model: str,
        version: int,
        kind: JobKind,
        inputs: Sequence[Any],
    ) -> Job:
        """Store a new pending job with its inputs, split into chunks."""
        ...

    async def get(self, job_id: str) -> Job:
        """The job, or JobNotFoundError."""
        ...

    async def claim_next(self, owner: str, lease_s: float) -> Job | None:
        """Atomically take the oldest pending job, or a running one whose lease expired."""
        ...

    async def renew_lease(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease; False when the job is no longer running under it."""
        ...

    async def next_chunk(self, job_id: str) -> Chunk | None:
        """The first chunk without results, or None when every chunk has them."""
        ...

    async def save_chunk_result(
        self, job_id: str, owner: str, chunk: int, results: Sequence[Any], lease_s: float
    ) -> Job:
        """Store one chunk's results and the progress in one transaction, renewing the lease."""
        ...

    async def complete(self, job_id: str, owner: str) -> Job:
        """Mark the job completed (every chunk has its results)."""
        ...

    async def fail(self, job_id: str, owner: str, error: str) -> Job:
        """Mark the job failed with a message for the client."""
        ...

    async def release(self, job_id: str, owner: str, delay_s: float = 0.0) -> None:
        """Give the job back (shutdown, model busy): another worker may claim it after delay_s."""
        ...

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a pending or running job; None when it had already finished."""
        ...

    async def delete(self, job_id: str) -> None:
        """Remove a job, its inputs and its results."""
        ...

    async def results(self, job_id: str, offset: int, limit: int) -> ResultPage:
        """Results offset..offset+limit of a completed job (JobNotCompletedError before)."""
        ...

    def iter_results(self, job_id: str, offset: int = 0) -> AsyncIterator[list[dict[str, Any]]]:
        """A completed job's results from `offset` on, one list per stored chunk."""
        ...

    async def purge_expired(self) -> int:
        """Delete finished jobs past their expiry; returns how many."""
        ...

    async def close(self) -> None: ...


class JobDispatcher(Protocol):
    """Whatever runs jobs: told when a job was accepted so that it starts without waiting
    for its next poll (the in-process runner; a Celery producer in the Redis deployment)."""

    def notify(self, job_id: str) -> None: ...


# ---------------------------------------------------------------------------- SQLite
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    model_reference  TEXT,
    model            TEXT NOT NULL,
    version          INTEGER NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('texts', 'records')),
    total            INTEGER NOT NULL,
    done             INTEGER NOT NULL DEFAULT 0,
    chunk_size       INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    expires_at       REAL,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at REAL,
    attempts         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_inputs (
    job_id TEXT NOT NULL,
    chunk  INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (job_id, chunk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_results (
    job_id TEXT NOT NULL,
    chunk  INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (job_id, chunk)
) WITHOUT ROWID;
"""

SELECT_JOB = (
    "SELECT id, status, model_reference, model, version, kind, total, done, chunk_size, "
    "created_at, started_at, finished_at, expires_at, error, lease_owner, lease_expires_at, "
    "attempts FROM jobs WHERE id = ?"
)


CLAIMABLE = (
    "SELECT 1 FROM jobs WHERE status = 'pending' "
    "OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)) LIMIT 1"
)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _job(row: sqlite3.Row | None, job_id: str) -> Job:
    if row is None:
        raise JobNotFoundError(f"no job '{job_id}' (it may have expired or been deleted)")
    return Job(**{key: row[key] for key in row.keys()})


class SqliteJobStore:
    """JobStore on one SQLite file in WAL mode, shared by every server process of one host.

    Each process opens its own connections (one per store thread); blocking calls run on the
    store's own small thread pool, never on the event loop. Writes take the database's write
    lock up front (BEGIN IMMEDIATE), so a claim is atomic across processes; other writers wait
    up to `busy_timeout_s`. synchronous=FULL: an accepted job survives a power cut too, not
    only a killed process (it costs one fsync per write, i.e. per chunk). The file must be on a
    local disk: WAL needs shared memory between the processes."""

    def __init__(
        self,
        path: Path,
        *,
        chunk_size: int = 500,
        ttl_s: float = 7 * 86400.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        busy_timeout_s: float = 10.0,
        threads: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts
        self._clock = clock
        self._db = SqliteDatabase(
            self.path,
            what="job store",
            busy_timeout_s=busy_timeout_s,
            synchronous="FULL",
            closed_error=lambda: MlserveError("the job store is closed"),
            rows_as_mappings=True,
        )
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jobstore")

    # ------------------------------------------------------------------ plumbing
    @classmethod
    async def open(cls, path: Path, **kwargs: Any) -> SqliteJobStore:
        """Create the folder and the schema if needed (off the event loop) and return the store."""
        store = cls(path, **kwargs)
        try:
            await store._call(store.initialize)
        except BaseException:
            await store.close()
            raise
        return store

    def initialize(self) -> None:
        """Create the database file and schema (idempotent; safe from several processes)."""
        self._db.create_schema(SCHEMA, SCHEMA_VERSION)

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Wait for running calls, then close every connection this store opened."""
        self._db.stop_connecting()
        self._executor.shutdown(wait=True)
        self._db.close()

    # ------------------------------------------------------------------ blocking implementation
    def submit_sync(
        self,
        *,
        model_reference: str | None,
        model: str,
        version: int,
        kind: JobKind,
        inputs: Sequence[Any],
    ) -> Job:
        if not inputs:
            raise ValueError("a job needs at least one input")
        job_id = new_job_id()
        size = self.chunk_size
        chunks = [
            (job_id, i, orjson.dumps(list(inputs[start : start + size])))
            for i, start in enumerate(range(0, len(inputs), size))
        ]
        now = self._clock()
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, status, model_reference, model, version, kind, total, "
                "chunk_size, created_at) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, model_reference, model, version, kind, len(inputs), size, now),
            )
            db.executemany("INSERT INTO job_inputs (job_id, chunk, data) VALUES (?, ?, ?)", chunks)
            return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    def get_sync(self, job_id: str) -> Job:
        return _job(self._db.connection().execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    def claim_next_sync(self, owner: str, lease_s: float) -> Job | None:
        now = self._clock()
        # Idle polling from every loop of every process: look before taking the write lock.
        if not self._db.connection().execute(CLAIMABLE, (now,)).fetchone():
            return None
        with self._db.transaction() as db:
            # A job whose worker died max_attempts times in a row (a model that crashes the
            # process, say) would otherwise kill every server that picks it up, forever.
            abandoned = db.execute(
                "SELECT id, attempts FROM jobs "
                "WHERE status = 'running' AND lease_expires_at <= ? AND attempts >= ?",
                (now, self.max_attempts),
            ).fetchall()
            for row in abandoned:
                error = (
                    f"abandoned: the process running it stopped {row['attempts']} times "
                    "before it finished (see the server logs)"
                )
                db.execute(
                    "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                    "expires_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                    (error, now, now + self.ttl_s, row["id"]),
                )
                db.execute("DELETE FROM job_inputs WHERE job_id = ?", (row["id"],))
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'pending' "
                "OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)) "
                "ORDER BY created_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            job_id = row["id"]
            db.execute(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?), "
                "lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, owner, now + lease_s, job_id),
            )
            return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    def renew_lease_sync(self, job_id: str, owner: str, lease_s: float) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_expires_at = ? "
                "WHERE id = ? AND status = 'running' AND lease_owner = ?",
                (self._clock() + lease_s, job_id, owner),
            )
            return cursor.rowcount == 1

    def next_chunk_sync(self, job_id: str) -> Chunk | None:
        db = self._db.connection()
        row = db.execute(
            "SELECT i.chunk, i.data, j.chunk_size FROM job_inputs i JOIN jobs j ON j.id = i.job_id"
            " WHERE i.job_id = ? ORDER BY i.chunk LIMIT 1",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return Chunk(row["chunk"], row["chunk"] * row["chunk_size"], orjson.loads(row["data"]))

    def _owned(self, db: sqlite3.Connection, job_id: str, owner: str) -> Job:
        job = _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        if job.status != "running" or job.lease_owner != owner:
            raise LeaseLostError(f"job {job_id} is {job.status}, leased by {job.lease_owner}")
        return job

    def save_chunk_result_sync(
        self, job_id: str, owner: str, chunk: int, results: Sequence[Any], lease_s: float
    ) -> Job:
        data = orjson.dumps(list(results))
        now = self._clock()
        try:
            with self._db.transaction() as db:
                self._owned(db, job_id, owner)
                # The input goes as its result arrives: what is left in job_inputs is exactly
                # the work still to do, which is what a resumed job picks up.
                deleted = db.execute(
                    "DELETE FROM job_inputs WHERE job_id = ? AND chunk = ?", (job_id, chunk)
                ).rowcount
                if deleted != 1:
                    raise LeaseLostError(f"chunk {chunk} of job {job_id} is already done")
                db.execute(
                    "INSERT INTO job_results (job_id, chunk, data) VALUES (?, ?, ?)",
                    (job_id, chunk, data),
                )
                db.execute(
                    "UPDATE jobs SET done = done + ?, lease_expires_at = ? WHERE id = ?",
                    (len(results), now + lease_s, job_id),
                )
                return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        except JobNotFoundError:
            raise LeaseLostError(f"job {job_id} was deleted") from None

    def _finish(self, job_id: str, owner: str, status: JobStatus, error: str | None = None) -> Job:
        now = self._clock()
        try:
            with self._db.transaction() as db:
                job = self._owned(db, job_id, owner)
                if status == "completed":
                    left = db.execute(
                        "SELECT COUNT(*) FROM job_inputs WHERE job_id = ?", (job_id,)
                    ).fetchone()[0]
                    if left or job.done != job.total:
                        raise ValueError(f"job {job_id} has {left} chunk(s) without results")
                db.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
                db.execute(
                    "UPDATE jobs SET status = ?, error = ?, finished_at = ?, expires_at = ?, "
                    "lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                    (status, error, now, now + self.ttl_s, job_id),
                )
                return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        except JobNotFoundError:
            raise LeaseLostError(f"job {job_id} was deleted") from None

    def complete_sync(self, job_id: str, owner: str) -> Job:
        return self._finish(job_id, owner, "completed")

    def fail_sync(self, job_id: str, owner: str, error: str) -> Job:
        return self._finish(job_id, owner, "failed", error)

    def release_sync(self, job_id: str, owner: str, delay_s: float = 0.0) -> None:
        with self._db.transaction() as db:
            # Not held against the job's attempts: it was given back, not abandoned.
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = ?, "
                "attempts = MAX(attempts - 1, 0) "
                "WHERE id = ? AND status = 'running' AND lease_owner = ?",
                (self._clock() + delay_s, job_id, owner),
            )

    def cancel_sync(self, job_id: str) -> Job | None:
        now = self._clock()
        with self._db.transaction() as db:
            job = _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
            if job.finished:
                return None
            db.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, expires_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                (now, now + self.ttl_s, job_id),
            )
            return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    def delete_sync(self, job_id: str) -> None:
        with self._db.transaction() as db:
            if db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise JobNotFoundError(f"no job '{job_id}' (it may have expired or been deleted)")
            db.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))

    def _completed(self, db: sqlite3.Connection, job_id: str) -> Job:
        job = _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        if job.status != "completed":
            raise JobNotCompletedError.of(job)
        return job

    def results_sync(self, job_id: str, offset: int, limit: int) -> ResultPage:
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        db = self._db.connection()
        db.execute("BEGIN")  # one snapshot: the job row and its results agree
        try:
            job = self._completed(db, job_id)
            end = min(offset + limit, job.total)
            if offset >= end:
                return ResultPage(job, offset, [])
            size = job.chunk_size
            first, last = offset // size, (end - 1) // size
            rows = db.execute(
                "SELECT chunk, data FROM job_results WHERE job_id = ? AND chunk BETWEEN ? AND ? "
                "ORDER BY chunk",
                (job_id, first, last),
            ).fetchall()
        finally:
            db.execute("COMMIT")
        items: list[dict[str, Any]] = []
        for row in rows:
            items.extend(orjson.loads(row["data"]))
        skip = offset - first * size
        return ResultPage(job, offset, items[skip : skip + (end - offset)])

    def results_chunk_sync(self, job_id: str, chunk: int) -> list[dict[str, Any]] | None:
        """One stored chunk of a completed job's results (None past the last chunk)."""
        db = self._db.connection()
        db.execute("BEGIN")
        try:
            self._completed(db, job_id)
            row = db.execute(
                "SELECT data FROM job_results WHERE job_id = ? AND chunk = ?", (job_id, chunk)
            ).fetchone()
        finally:
            db.execute("COMMIT")
        if row is None:
            return None
        items: list[dict[str, Any]] = orjson.loads(row["data"])
        return items

    def purge_expired_sync(self) -> int:
        now = self._clock()
        with self._db.transaction() as db:
            expired = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
                )
            ]
            for job_id in expired:
                db.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return len(expired)

    # ------------------------------------------------------------------ JobStore (async)
    async def submit(
        self,
        *,
        model_reference: str | None,
        model: str,
        version: int,
        kind: JobKind,
        inputs: Sequence[Any],
    ) -> Job:
        return await self._call(
            self.submit_sync,
            model_reference=model_reference,
            model=model,
            version=version,
            kind=kind,
            inputs=inputs,
        )

    async def get(self, job_id: str) -> Job:
        return await self._call(self.get_sync, job_id)

    async def claim_next(self, owner: str, lease_s: float) -> Job | None:
        return await self._call(self.claim_next_sync, owner, lease_s)

    async def renew_lease(self, job_id: str, owner: str, lease_s: float) -> bool:
        return await self._call(self.renew_lease_sync, job_id, owner, lease_s)

    async def next_chunk(self, job_id: str) -> Chunk | None:
        return await self._call(self.next_chunk_sync, job_id)

    async def save_chunk_result(
        self, job_id: str, owner: str, chunk: int, results: Sequence[Any], lease_s: float
    ) -> Job:
        return await self._call(self.save_chunk_result_sync, job_id, owner, chunk, results, lease_s)

    async def complete(self, job_id: str, owner: str) -> Job:
        return await self._call(self.complete_sync, job_id, owner)

    async def fail(self, job_id: str, owner: str, error: str) -> Job:
        return await self._call(self.fail_sync, job_id, owner, error)

    async def release(self, job_id: str, owner: str, delay_s: float = 0.0) -> None:
        await self._call(self.release_sync, job_id, owner, delay_s)

    async def cancel(self, job_id: str) -> Job | None:
        return await self._call(self.cancel_sync, job_id)

    async def delete(self, job_id: str) -> None:
        await self._call(self.delete_sync, job_id)

    async def results(self, job_id: str, offset: int, limit: int) -> ResultPage:
        return await self._call(self.results_sync, job_id, offset, limit)

    async def iter_results(
        self, job_id: str, offset: int = 0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        job = await self.get(job_id)
        chunk, skip = divmod(max(offset, 0), job.chunk_size)
        while True:
            items = await self._call(self.results_chunk_sync, job_id, chunk)
            if items is None:
                return
            yield items[skip:] if skip else items
            chunk, skip = chunk + 1, 0

    async def purge_expired(self) -> int:
        return await self._call(self.purge_expired_sync)


# ---------------------------------------------------------------------------- factory
async def open_job_store(settings: Settings, *, redis: RedisBackend | None = None) -> JobStore:
    """The job store for these settings: in Redis, shared by every replica and worker, when
    there is a Redis backend (redis.url); else SQLite in the state directory (one host)."""
    if redis is not None:
        from mlserve.jobs.redis import RedisJobStore

        return RedisJobStore(
            redis,
            chunk_size=settings.jobs.chunk_size,
            ttl_s=settings.jobs.ttl_s,
            dispatch_grace_s=settings.jobs.lease_s,
        )
    return await SqliteJobStore.open(
        settings.jobs_database, chunk_size=settings.jobs.chunk_size, ttl_s=settings.jobs.ttl_s
    )
