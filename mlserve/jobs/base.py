"""What every job store shares: the JobStore protocol, the job's value objects and errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from mlserve.errors import MlserveError, NotFoundError
from mlserve.schemas import JobKind, JobStatus

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "FINISHED",
    "READABLE",
    "Chunk",
    "ClaimOutcome",
    "Job",
    "JobDispatcher",
    "JobNotCompletedError",
    "JobNotFoundError",
    "JobStore",
    "JobsUnavailableError",
    "LeaseLostError",
    "ResultPage",
    "SharedJobStore",
    "check_page",
    "encode_chunks",
    "iter_result_chunks",
    "new_job_id",
    "page_chunks",
    "result_page",
]

FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# Whose results can be read: every row of a completed job; the rows a failed job scored before
# it stopped (its first `done` rows: chunks are scored in order).
READABLE: frozenset[str] = frozenset({"completed", "failed"})

DEFAULT_MAX_ATTEMPTS = 5

# What claiming a named job found: it is now ours, or gone, finished, held by a live lease, or
# failed because the processes running it kept dying without saving a chunk (see
# SharedJobStore.claim).
ClaimOutcome = Literal["claimed", "missing", "finished", "held", "abandoned"]


# ---------------------------------------------------------------------------- errors
class JobNotFoundError(NotFoundError):
    """No job with this id (never submitted, deleted, or expired and purged)."""

    code = "job_not_found"

    @classmethod
    def of(cls, job_id: str) -> JobNotFoundError:
        return cls(f"no job '{job_id}' (it may have expired or been deleted)")


class JobNotCompletedError(MlserveError):
    """The job's results were asked for while it has none to give: pending, running or
    cancelled (a failed job gives the rows it scored)."""

    code = "job_not_completed"
    status_code = 409

    @classmethod
    def of(cls, job: Job) -> JobNotCompletedError:
        detail = f": {job.error}" if job.error else ""
        return cls(
            f"job {job.id} is {job.status} ({job.done}/{job.total} rows done){detail}; "
            "results are available once it has completed (or failed: the rows scored)"
        )

    @classmethod
    def check(cls, job: Job) -> Job:
        """The job, if its results can be read (completed or failed), else this error."""
        if job.status not in READABLE:
            raise cls.of(job)
        return job


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
    # Claims since the job last saved a chunk (reset by each save): a job is given up only
    # when max_attempts processes in a row died on it without progress.
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
        """Where the next page starts; None on the last page with rows (a completed job's
        last row, or the last row a failed job scored)."""
        end = self.offset + len(self.items)
        return end if self.items and end < self.job.done else None


def new_job_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------- shared by stores
def encode_chunks(inputs: Sequence[Any], size: int) -> list[bytes]:
    """A new job's inputs as stored: JSON lists of `size` inputs (the last may be shorter)."""
    if not inputs:
        raise ValueError("a job needs at least one input")
    return [
        orjson.dumps(list(inputs[start : start + size])) for start in range(0, len(inputs), size)
    ]


def check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 1:
        raise ValueError("offset must be >= 0 and limit >= 1")


def page_chunks(job: Job, offset: int, limit: int) -> range:
    """The stored result chunks that hold rows offset..offset+limit (none past the rows done:
    every row of a completed job, the first `done` rows of a failed one)."""
    end = min(offset + limit, job.done)
    if offset >= end:
        return range(0)
    return range(offset // job.chunk_size, (end - 1) // job.chunk_size + 1)


def result_page(job: Job, offset: int, limit: int, chunks: Iterable[bytes]) -> ResultPage:
    """The page of rows offset..offset+limit, from the stored chunks page_chunks named."""
    items: list[dict[str, Any]] = []
    for data in chunks:
        items.extend(orjson.loads(data))
    skip = offset % job.chunk_size
    return ResultPage(job, offset, items[skip : skip + max(min(limit, job.done - offset), 0)])


async def iter_result_chunks(
    job: Job, offset: int, read: Callable[[int], Awaitable[bytes | None]]
) -> AsyncIterator[list[dict[str, Any]]]:
    """A completed (or failed) job's results from `offset` on, one list per stored chunk;
    `read(i)` is the stored chunk i, or None past the last one."""
    chunk, skip = divmod(max(offset, 0), job.chunk_size)
    while True:
        data = await read(chunk)
        if data is None:
            return
        items: list[dict[str, Any]] = orjson.loads(data)
        yield items[skip:] if skip else items
        chunk, skip = chunk + 1, 0


# ---------------------------------------------------------------------------- the interfaces
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
        """Store one chunk's results and the progress in one transaction, renewing the lease
        and resetting the job's attempts (progress was made)."""
        ...

    async def complete(self, job_id: str, owner: str) -> Job:
        """Mark the job completed (every chunk has its results)."""
        ...

    async def fail(self, job_id: str, owner: str, error: str) -> Job:
        """Mark the job failed with a message for the client; its results so far and its
        inputs are kept until it expires."""
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
        """Results offset..offset+limit of a completed job, or of the rows a failed job
        scored (JobNotCompletedError while pending or running, or once cancelled)."""
        ...

    def iter_results(self, job_id: str, offset: int = 0) -> AsyncIterator[list[dict[str, Any]]]:
        """A completed (or failed) job's results from `offset` on, one list per stored chunk."""
        ...

    async def purge_expired(self) -> int:
        """Delete finished jobs past their expiry; returns how many."""
        ...

    async def close(self) -> None: ...


class SharedJobStore(JobStore, Protocol):
    """A JobStore shared by several hosts (Redis), whose jobs run on workers that are handed
    one job each (Celery): a worker claims the job its task names, and the servers dispatch
    again the jobs nobody is working on."""

    async def claim(
        self, job_id: str, owner: str, lease_s: float
    ) -> tuple[ClaimOutcome, Job | None]:
        """Take this job if nobody holds it (pending, given back, or its lease expired)."""
        ...

    async def due_for_dispatch(self) -> list[str]:
        """Unfinished jobs nobody is working on, to be dispatched again."""
        ...

    async def unfinished(self) -> int:
        """How many jobs are pending or running."""
        ...


class JobDispatcher(Protocol):
    """Whatever runs jobs: told when a job was accepted so that it starts without waiting
    for its next poll (the in-process runner; a Celery producer in the Redis deployment)."""

    def notify(self, job_id: str) -> None: ...
