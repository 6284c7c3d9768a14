"""Async jobs on Celery (redis.url set), the sending side: the Celery app's configuration, the
task's name and queue, and the dispatcher a server uses to hand jobs to `mlserve worker`
(whose side is mlserve.worker.app).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlserve.backends.redis import redis_url, require_redis
from mlserve.config import Settings
from mlserve.errors import ConfigError
from mlserve.jobs.base import JobsUnavailableError, SharedJobStore

__all__ = [
    "TASK_NAME",
    "CeleryDispatcher",
    "celery_module",
    "make_celery",
    "queue_name",
    "sweep_interval",
]

log = logging.getLogger(__name__)

TASK_NAME = "mlserve.score_job"
SEND_RETRIES = 2
# Celery ships no type information: its objects are Any here.
Celery = Any


def celery_module(name: str = "celery") -> Any:
    """Import (a module of) Celery, the optional dependency, by name."""
    require_redis(celery=True)
    return importlib.import_module(name)


def queue_name(settings: Settings) -> str:
    """The Celery queue of this deployment (named after redis.key_prefix)."""
    return settings.redis.key_prefix + "jobs"


def sweep_interval(settings: Settings) -> float:
    """How often replicas look for jobs to dispatch again: well within a lease."""
    return max(0.5, min(5.0, settings.jobs.lease_s / 2))


def make_celery(settings: Settings) -> Celery:
    """The Celery app over redis.url: the servers' producer (the worker registers its task on
    it, mlserve.worker.app)."""
    url = redis_url(settings)
    if url is None:
        raise ConfigError("async jobs on Celery need redis.url (MLSERVE_REDIS__URL)")
    app = celery_module().Celery("mlserve", set_as_current=False)
    queue = queue_name(settings)
    app.conf.update(
        broker_url=url,
        task_ignore_result=True,  # the job store holds status and results
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.redis.connect_timeout_s,
        broker_transport_options={
            "socket_timeout": settings.redis.socket_timeout_s,
            "socket_connect_timeout": settings.redis.connect_timeout_s,
        },
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # At-least-once: a task is acknowledged when it returns, and requeued when the process
        # running it dies; the job's lease turns the duplicates into no-ops.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Neither the solo nor the threads pool can cancel a running task; the job's lease
        # already makes a redelivered task harmless.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": SEND_RETRIES,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
    )
    return app


class CeleryDispatcher:
    """The server's JobDispatcher with redis.url: `notify` sends the job's task (on one
    thread of its own: kombu's client blocks), and a sweep loop sends again the tasks of
    unfinished jobs nobody works on (see SharedJobStore.due_for_dispatch)."""

    def __init__(self, *, celery: Celery, store: SharedJobStore, queue: str, interval_s: float):
        self.celery = celery
        self.store = store
        self.queue = queue
        self.interval_s = interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-send")
        self._sweeper: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._send_failing = False
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: Settings, store: SharedJobStore) -> CeleryDispatcher:
        return cls(
            celery=make_celery(settings),
            store=store,
            queue=queue_name(settings),
            interval_s=sweep_interval(settings),
        )

    def notify(self, job_id: str) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._send, job_id)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _send(self, job_id: str) -> None:
        try:
            self.celery.send_task(TASK_NAME, args=[job_id], queue=self.queue)
        except Exception as exc:  # noqa: BLE001 - the sweeper sends it again
            if not self._send_failing:
                log.warning(
                    "cannot queue job %s on Celery (%s: %s); it is dispatched again once "
                    "Redis answers",
                    job_id,
                    type(exc).__name__,
                    exc,
                )
            self._send_failing = True
            return
        if self._send_failing:
            log.info("queueing jobs on Celery works again")
        self._send_failing = False

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="jobs-sweep")

    async def _sweep(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval_s)  # a timer between sweeps
            if self._stopping:
                continue
            try:
                due = await self.store.due_for_dispatch()
            except JobsUnavailableError:  # Redis is down (answered at once, no round trip)
                continue
            except Exception:  # a bug here must not stop the sweeps
                log.exception("cannot look for jobs to dispatch")
                continue
            for job_id in due:
                log.info("job %s: nobody is working on it; dispatching it again", job_id)
                self.notify(job_id)

    async def stop(self) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            # Bounded, like RedisBackend.close: the sweep also ends on its own.
            await asyncio.wait({self._sweeper}, timeout=self.interval_s + 5.0)
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
