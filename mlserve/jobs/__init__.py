"""Async job stores: the protocol, the SQLite (one host) and Redis (replicas) implementations,
and the factory that picks one from the settings."""

from __future__ import annotations

from mlserve.jobs.store import (
    DEFAULT_MAX_ATTEMPTS,
    Chunk,
    Job,
    JobDispatcher,
    JobNotCompletedError,
    JobNotFoundError,
    JobStore,
    JobsUnavailableError,
    LeaseLostError,
    ResultPage,
    SqliteJobStore,
    new_job_id,
    open_job_store,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "Chunk",
    "Job",
    "JobDispatcher",
    "JobNotCompletedError",
    "JobNotFoundError",
    "JobStore",
    "JobsUnavailableError",
    "LeaseLostError",
    "ResultPage",
    "SqliteJobStore",
    "new_job_id",
    "open_job_store",
]
