"""The in-process job runner: claims jobs from the store and scores them chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlserve.errors import MlserveError, ModelUnavailableError, redact_paths
from mlserve.jobs import (
    Chunk,
    Job,
    JobStore,
    JobsUnavailableError,
    LeaseLostError,
    open_job_store,
    open_shared_job_store,
)
from mlserve.runtime.model import LoadedModel
from mlserve.schemas import JobKind
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.service import count_predictions, prediction_fields
from mlserve.serving.state import AppState

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5  # bound on how late another process's job is noticed
PURGE_INTERVAL_S = 60.0
RETRY_UNAVAILABLE_S = 1.0  # a busy or swapping model: give the job back, try again after this


def prepare_rows(
    model: LoadedModel,
    kind: JobKind,
    inputs: Sequence[Any],
    *,
    start: int = 0,
    fields: Sequence[str] | None = None,
) -> list[Any]:
    """Validate and convert inputs exactly as /api/predict/batch does; errors name the row
    (`texts.12`, or the caller's names, e.g. `line 13` of an uploaded file)."""
    if kind == "texts":
        return [
            model.prepare(text=value, field=fields[i] if fields else f"texts.{start + i}")
            for i, value in enumerate(inputs)
        ]
    return [
        model.prepare(features=value, field=fields[i] if fields else f"records.{start + i}")
        for i, value in enumerate(inputs)
    ]


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class JobRunner:
    """`concurrency` loops per process, each working on one job at a time.

    A loop claims a job with a lease, scores its chunks that have no results yet through the
    model's batcher (the path /api/predict/batch takes), saves each chunk's results together
    with the progress, and renews the lease while it works. A process that dies mid-job
    stops renewing: once the lease expires, any process claims the job and carries on from
    the first chunk without results."""

    def __init__(
        self,
        *,
        store: JobStore,
        manager: ModelManager,
        metrics: ServerMetrics,
        concurrency: int,
        lease_s: float,
        poll_interval_s: float = POLL_INTERVAL_S,
        purge_interval_s: float = PURGE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.manager = manager
        self.metrics = metrics
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.purge_interval_s = purge_interval_s
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._purger: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._purger = loop.create_task(self._purge_loop(), name="jobs-purge")
        for n in range(self.concurrency):
            self._tasks.append(loop.create_task(self._claim_loop(_owner_id()), name=f"jobs-{n}"))

    def notify(self, job_id: str) -> None:
        """A job was accepted here: idle loops claim at once instead of at their next poll."""
        self._wakeup.set()

    def request_stop(self) -> None:
        """Jobs in progress are given back after their current chunk; no new job is claimed."""
        self._stopping.set()
        self._wakeup.set()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Let each loop finish the chunk it is scoring and give its job back (so a restart
        resumes it at once); loops still busy after `timeout` are cancelled, which gives the
        job back as well."""
        self._stopping.set()
        self._wakeup.set()
        if self._purger is not None:
            self._purger.cancel()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        await asyncio.gather(
            *self._tasks, *([self._purger] if self._purger else []), return_exceptions=True
        )

    # ------------------------------------------------------------------ loops
    async def _claim_loop(self, owner: str) -> None:
        while not self.manager.loading_done and not self._stopping.is_set():
            await self._idle()  # jobs need the models: claim none before they are loaded
        while not self._stopping.is_set():
            self._wakeup.clear()  # before claiming: a job accepted from here on wakes us
            try:
                job = await self.store.claim_next(owner, self.lease_s)
            except JobsUnavailableError as exc:  # down, full or locked: logged by the store
                log.warning("cannot claim a job: %s", exc.message)
                job = None
            except Exception:  # a bug: keep polling
                log.exception("cannot claim a job")
                job = None
            if job is None:
                await self._idle()
                continue
            log.info(
                "job %s: working on it (attempt %d, %d/%d rows done, model %s:%d)",
                job.id, job.attempts, job.done, job.total, job.model, job.version,
            )  # fmt: skip
            await self.process(job, owner)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self.poll_interval_s)

    async def _purge_loop(self) -> None:
        while True:
            try:
                purged = await self.store.purge_expired()
            except Exception:  # tried again at the next interval
                log.exception("cannot purge expired jobs")
            else:
                if purged:
                    log.info("purged %d expired job(s)", purged)
            await asyncio.sleep(self.purge_interval_s)  # a timer between purges

    # ------------------------------------------------------------------ one job
    async def process(self, job: Job, owner: str) -> None:
        """Score every chunk of a claimed job that has no results yet, then complete it."""
        self.metrics.jobs_running.inc()
        try:
            await self._process(job, owner)
        finally:
            self.metrics.jobs_running.dec()

    async def _process(self, job: Job, owner: str) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat(job.id, owner, lost), name=f"lease-{job.id}"
        )
        try:
            await self._chunks(job, owner, lost)
        except LeaseLostError as exc:
            log.info("job %s: stopped working on it (%s)", job.id, exc)
        except JobsUnavailableError as exc:
            # Not the job's fault (the store is down, its disk full): given back if the store
            # still takes that, so the pause does not count against the job's attempts; else
            # its lease runs out. Either way it is resumed (from its first chunk without
            # results) once the store is back.
            log.warning("job %s: paused, %s", job.id, exc.message)
            with contextlib.suppress(Exception):
                await self.store.release(job.id, owner, self.lease_s)
        except asyncio.CancelledError:
            await self._give_back(job.id, owner)
            raise
        except Exception:
            log.exception("job %s: internal error", job.id)
            with contextlib.suppress(Exception):
                await self.store.fail(job.id, owner, "internal error (see the server log)")
                self._finished(job, "failed")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _chunks(self, job: Job, owner: str, lost: asyncio.Event) -> None:
        while True:
            if self._stopping.is_set():
                await self.store.release(job.id, owner)
                log.info("job %s: given back on shutdown", job.id)
                return
            current = await self.store.get(job.id)  # cancelled between chunks?
            if lost.is_set() or current.status != "running" or current.lease_owner != owner:
                raise LeaseLostError(f"job is {current.status}")
            chunk = await self.store.next_chunk(job.id)
            if chunk is None:
                finished = await self.store.complete(job.id, owner)
                self._finished(job, "succeeded")
                log.info("job %s: completed (%d rows)", job.id, finished.total)
                return
            try:
                items = await self.score(job, chunk)
            except ModelUnavailableError as exc:
                # Busy (queue full), being swapped, or degraded: not the job's fault.
                delay = exc.retry_after or RETRY_UNAVAILABLE_S
                log.info("job %s: %s; retrying in %.1f s", job.id, exc.message, delay)
                await self.store.release(job.id, owner, delay)
                return
            except MlserveError as exc:
                end = chunk.start + len(chunk.inputs) - 1
                message = redact_paths(
                    exc.message, self.manager.registry.root, self.manager.settings.home
                )
                log.warning("job %s: failed on rows %d-%d: %s", job.id, chunk.start, end, message)
                await self.store.fail(job.id, owner, f"rows {chunk.start}-{end}: {message}")
                self._finished(job, "failed")
                return
            await self.store.save_chunk_result(job.id, owner, chunk.index, items, self.lease_s)

    async def score(self, job: Job, chunk: Chunk) -> list[dict[str, Any]]:
        """One chunk through the runtime, the way /api/predict/batch scores a request: the
        version resolved at submission, the model's batcher, the same counters and items.
        Not through the prediction cache (a big job would evict what live traffic needs) and
        not mirrored to a shadow version (shadows measure live traffic)."""
        runtime = await self.manager.get(f"{job.model}:{job.version}")
        started = time.perf_counter()
        rows = await asyncio.to_thread(
            prepare_rows, runtime.model, job.kind, chunk.inputs, start=chunk.start
        )
        predictions = await runtime.batcher.submit_many(rows)
        self.metrics.job_chunk_latency.labels(job.model).observe(time.perf_counter() - started)
        self.metrics.job_rows.labels(job.model).inc(len(predictions))
        count_predictions(self.metrics, runtime, predictions)
        return [prediction_fields(p) for p in predictions]

    def _finished(self, job: Job, status: str) -> None:
        """Count a job this runner ended (a cancelled job is counted where it is cancelled:
        DELETE /api/jobs/{id}, which ends pending jobs too)."""
        self.metrics.jobs_finished.labels(job.model, status).inc()

    async def _heartbeat(self, job_id: str, owner: str, lost: asyncio.Event) -> None:
        """Renew the lease while a chunk takes long (a slow model, a queue behind live traffic);
        saving a chunk renews it too."""
        while True:
            await asyncio.sleep(self.lease_s / 3)  # a timer: a third of the lease
            try:
                if not await self.store.renew_lease(job_id, owner, self.lease_s):
                    lost.set()
                    return
            except (sqlite3.Error, MlserveError, OSError) as exc:
                log.warning("job %s: cannot renew its lease: %s", job_id, exc)

    async def _give_back(self, job_id: str, owner: str) -> None:
        try:
            await asyncio.shield(self.store.release(job_id, owner))
        except Exception as exc:  # noqa: BLE001 - the lease expires anyway
            log.warning("job %s: cannot give it back (%s); its lease will expire", job_id, exc)


async def start_jobs(state: AppState) -> Callable[[], Awaitable[None]]:
    """Open the job store, start this process's runner, put both on `state`; returns the
    function that stops them. A store that cannot be opened turns async jobs off (503)
    while predictions go on."""
    settings = state.settings
    if state.redis is not None:
        return await _start_shared_jobs(state, state.redis)
    path = settings.jobs_database
    try:
        store = await open_job_store(settings)
    except (OSError, sqlite3.Error, MlserveError) as exc:
        log.error("cannot open the job store %s; async jobs are off: %s", path, exc)

        async def nothing() -> None:
            return None

        return nothing
    runner = JobRunner(
        store=store,
        manager=state.manager,
        metrics=state.metrics,
        concurrency=settings.jobs.concurrency,
        lease_s=settings.jobs.lease_s,
    )
    runner.start()
    state.jobs = store
    state.job_dispatcher = runner

    async def stop() -> None:
        await runner.stop(timeout=settings.server.graceful_timeout)
        await store.close()

    return stop


async def _start_shared_jobs(state: AppState, redis: RedisBackend) -> Callable[[], Awaitable[None]]:
    """With redis.url: jobs live in Redis and run on Celery workers (`mlserve worker`); this
    process accepts jobs, answers for any job, and dispatches (again) the jobs nobody works
    on. It scores none itself (jobs.concurrency does not apply)."""
    from mlserve.jobs.celery import CeleryDispatcher

    store = open_shared_job_store(state.settings, redis)
    dispatcher = CeleryDispatcher.from_settings(state.settings, store)
    dispatcher.start()
    state.jobs = store
    state.job_dispatcher = dispatcher

    async def stop() -> None:
        await dispatcher.stop()
        await store.close()

    return stop
