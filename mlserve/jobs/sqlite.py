"""The job store on one SQLite file, shared by every server process of one host."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from mlserve.backends.sqlite import DatabaseErrors, SqliteDatabase, in_thread, opened
from mlserve.errors import MlserveError
from mlserve.jobs.base import (
    DEFAULT_MAX_ATTEMPTS,
    Chunk,
    Job,
    JobNotCompletedError,
    JobNotFoundError,
    JobsUnavailableError,
    LeaseLostError,
    ResultPage,
    check_page,
    encode_chunks,
    iter_result_chunks,
    new_job_id,
    page_chunks,
    result_page,
)
from mlserve.schemas import JobKind, JobStatus

__all__ = ["SqliteJobStore"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

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


def _pool(store: SqliteJobStore) -> Executor:
    """Where the store's blocking calls run."""
    return store._executor


# A full disk, a lock held too long, an I/O error: 503 jobs_unavailable, like a Redis job
# store that is down, never a 500 (the cause goes to the log, not the client).
_errors = DatabaseErrors(
    what="job store",
    message="async jobs are unavailable: the job store {why}; try again later",
    error=JobsUnavailableError,
    log=log,
)


def _job(row: sqlite3.Row | None, job_id: str) -> Job:
    if row is None:
        raise JobNotFoundError.of(job_id)
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
        return await opened(store, store._executor)

    def initialize(self) -> None:
        """Create the database file and schema (idempotent; safe from several processes)."""
        self._db.create_schema(SCHEMA, SCHEMA_VERSION)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Wait for running calls, then close every connection this store opened."""
        self._db.shutdown(self._executor)

    # ------------------------------------------------------------------ blocking implementation
    @_errors.guarded
    def submit_sync(
        self,
        *,
        model_reference: str | None,
        model: str,
        version: int,
        kind: JobKind,
        inputs: Sequence[Any],
    ) -> Job:
        chunks = encode_chunks(inputs, self.chunk_size)
        job_id = new_job_id()
        now = self._clock()
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, status, model_reference, model, version, kind, total, "
                "chunk_size, created_at) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, model_reference, model, version, kind, len(inputs), self.chunk_size, now),
            )
            db.executemany(
                "INSERT INTO job_inputs (job_id, chunk, data) VALUES (?, ?, ?)",
                [(job_id, i, data) for i, data in enumerate(chunks)],
            )
            return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    @_errors.guarded
    def get_sync(self, job_id: str) -> Job:
        return _job(self._db.connection().execute(SELECT_JOB, (job_id,)).fetchone(), job_id)

    @_errors.guarded
    def claim_next_sync(self, owner: str, lease_s: float) -> Job | None:
        now = self._clock()
        # Idle polling from every loop of every process: look before taking the write lock.
        if not self._db.connection().execute(CLAIMABLE, (now,)).fetchone():
            return None
        with self._db.transaction() as db:
            # A job whose worker died max_attempts times in a row without saving a chunk (a
            # model that crashes the process, say) would otherwise kill every server that
            # picks it up, forever. Progress resets the count (save_chunk_result), so a job
            # whose processes keep dying for other reasons still gets through.
            abandoned = db.execute(
                "SELECT id, attempts FROM jobs "
                "WHERE status = 'running' AND lease_expires_at <= ? AND attempts >= ?",
                (now, self.max_attempts),
            ).fetchall()
            for row in abandoned:
                error = (
                    f"abandoned: the process running it stopped {row['attempts']} times "
                    "in a row without saving a chunk (see the server logs)"
                )
                db.execute(
                    "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                    "expires_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                    (error, now, now + self.ttl_s, row["id"]),
                )
                # Its inputs and results stay until it expires (purge_expired_sync).
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

    @_errors.guarded
    def renew_lease_sync(self, job_id: str, owner: str, lease_s: float) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_expires_at = ? "
                "WHERE id = ? AND status = 'running' AND lease_owner = ?",
                (self._clock() + lease_s, job_id, owner),
            )
            return cursor.rowcount == 1

    @_errors.guarded
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

    @_errors.guarded
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
                # Progress: the attempts that count against the job start again from here.
                db.execute(
                    "UPDATE jobs SET done = done + ?, lease_expires_at = ?, attempts = 0 "
                    "WHERE id = ?",
                    (len(results), now + lease_s, job_id),
                )
                return _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        except JobNotFoundError:
            raise LeaseLostError(f"job {job_id} was deleted") from None

    @_errors.guarded
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
                # A failed job keeps the inputs it did not score until it expires (purge).
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

    @_errors.guarded
    def release_sync(self, job_id: str, owner: str, delay_s: float = 0.0) -> None:
        with self._db.transaction() as db:
            # Not held against the job's attempts: it was given back, not abandoned.
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = ?, "
                "attempts = MAX(attempts - 1, 0) "
                "WHERE id = ? AND status = 'running' AND lease_owner = ?",
                (self._clock() + delay_s, job_id, owner),
            )

    @_errors.guarded
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

    @_errors.guarded
    def delete_sync(self, job_id: str) -> None:
        with self._db.transaction() as db:
            if db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise JobNotFoundError.of(job_id)
            db.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))

    def _readable(self, db: sqlite3.Connection, job_id: str) -> Job:
        return JobNotCompletedError.check(
            _job(db.execute(SELECT_JOB, (job_id,)).fetchone(), job_id)
        )

    @_errors.guarded
    def results_sync(self, job_id: str, offset: int, limit: int) -> ResultPage:
        check_page(offset, limit)
        with self._db.snapshot() as db:  # the job row and its results agree
            job = self._readable(db, job_id)
            chunks = page_chunks(job, offset, limit)
            rows = (
                db.execute(
                    "SELECT data FROM job_results WHERE job_id = ? AND chunk BETWEEN ? AND ? "
                    "ORDER BY chunk",
                    (job_id, chunks.start, chunks.stop - 1),
                ).fetchall()
                if chunks
                else []
            )
        return result_page(job, offset, limit, (row["data"] for row in rows))

    @_errors.guarded
    def result_chunk_sync(self, job_id: str, chunk: int) -> bytes | None:
        """One stored chunk of a completed (or failed) job's results, as JSON (None past the
        last one)."""
        with self._db.snapshot() as db:
            self._readable(db, job_id)
            row = db.execute(
                "SELECT data FROM job_results WHERE job_id = ? AND chunk = ?", (job_id, chunk)
            ).fetchone()
        if row is None:
            return None
        data: bytes = row["data"]
        return data

    @_errors.guarded
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
    submit = in_thread(submit_sync, pool=_pool)
    get = in_thread(get_sync, pool=_pool)
    claim_next = in_thread(claim_next_sync, pool=_pool)
    renew_lease = in_thread(renew_lease_sync, pool=_pool)
    next_chunk = in_thread(next_chunk_sync, pool=_pool)
    save_chunk_result = in_thread(save_chunk_result_sync, pool=_pool)
    complete = in_thread(complete_sync, pool=_pool)
    fail = in_thread(fail_sync, pool=_pool)
    release = in_thread(release_sync, pool=_pool)
    cancel = in_thread(cancel_sync, pool=_pool)
    delete = in_thread(delete_sync, pool=_pool)
    results = in_thread(results_sync, pool=_pool)
    result_chunk = in_thread(result_chunk_sync, pool=_pool)
    purge_expired = in_thread(purge_expired_sync, pool=_pool)

    async def iter_results(
        self, job_id: str, offset: int = 0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        job = await self.get(job_id)
        async for items in iter_result_chunks(
            job, offset, lambda chunk: self.result_chunk(job_id, chunk)
        ):
            yield items
