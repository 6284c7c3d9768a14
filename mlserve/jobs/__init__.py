"""Async job stores: the protocol (base), the SQLite (one host) and Redis (replicas)
implementations, and the factories that pick one from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.jobs.base import (
    DEFAULT_MAX_ATTEMPTS,
    Chunk,
    ClaimOutcome,
    Job,
    JobDispatcher,
    JobNotCompletedError,
    JobNotFoundError,
    JobStore,
    JobsUnavailableError,
    LeaseLostError,
    ResultPage,
    SharedJobStore,
    new_job_id,
)

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
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
    "new_job_id",
    "open_job_store",
    "open_shared_job_store",
]


async def open_job_store(settings: Settings, *, redis: RedisBackend | None = None) -> JobStore:
    """The job store for these settings: in Redis, shared by every replica and worker, when
    there is a Redis backend (redis.url); else SQLite in the state directory (one host)."""
    if redis is not None:
        return open_shared_job_store(settings, redis)
    from mlserve.jobs.sqlite import SqliteJobStore

    return await SqliteJobStore.open(
        settings.jobs_database, chunk_size=settings.jobs.chunk_size, ttl_s=settings.jobs.ttl_s
    )


def open_shared_job_store(settings: Settings, redis: RedisBackend) -> SharedJobStore:
    """The job store in Redis that the replicas and Celery workers share (redis.url)."""
    from mlserve.jobs.redis import RedisJobStore

    return RedisJobStore(
        redis,
        chunk_size=settings.jobs.chunk_size,
        ttl_s=settings.jobs.ttl_s,
        dispatch_grace_s=settings.jobs.lease_s,
    )
