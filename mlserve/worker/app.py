"""Async jobs on Celery (redis.url set): the app, the task, the worker's runtime, the dispatcher.

The server stores an accepted job in Redis (RedisJobStore), then sends one Celery task naming
it; `mlserve worker` runs the task: it claims the job's lease and scores the chunks still
without results through the server's own code (JobRunner over a ModelManager, i.e. the
runtime's LoadedModel and batcher). Redis is Celery's broker, and the job store in Redis is the
result backend: status, progress and results live there, written chunk by chunk under the
job's lease. Celery's own result backend is not used (ignore_result): a task's outcome would
only repeat the job's status, and one more write per task is one more thing to fail while
Redis is away.

Nothing is lost when a worker dies: tasks are acknowledged late (a task whose worker dies is
redelivered), and, independently of Celery, every replica runs a sweeper that dispatches
again any unfinished job nobody holds a live lease on (its worker died, its task was lost
while Redis was down, or it was given back). A job's lease makes the duplicates harmless:
only its holder writes, and each chunk is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
import warnings
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from mlserve.backends.redis import RedisBackend, display_url, redis_url
from mlserve.config import Settings
from mlserve.errors import ConfigError, MlserveError
from mlserve.jobs import JobsUnavailableError, SharedJobStore, open_shared_job_store
from mlserve.jobs.celery import TASK_NAME, Celery, celery_module, make_celery, queue_name

if TYPE_CHECKING:
    from mlserve.serving.jobrunner import JobRunner
    from mlserve.serving.manager import ModelManager

__all__ = ["WorkerRuntime", "run_worker", "serve_metrics"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _register_task(app: Celery, runtime: WorkerRuntime) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def score_job(job_id: str) -> dict[str, Any]:
        """Claim the job and score its chunks without results (one Celery task per job)."""
        return runtime.run(job_id)


# ---------------------------------------------------------------------------- worker side
def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class WorkerRuntime:
    """What one `mlserve worker` process needs to score jobs: an event loop on its own thread
    holding the Redis client, the job store and a ModelManager over the registry (the
    server's model loading, batchers and breakers). Celery's pool threads hand it jobs."""

    def __init__(self, settings: Settings) -> None:
        from mlserve.serving.metrics import ServerMetrics

        self.settings = settings
        # The jobs' metrics (mlserve_jobs_*, rows, chunk durations), the runtime's and the
        # models loaded (mlserve_model_info), served by `mlserve worker --metrics-port`.
        self.metrics = ServerMetrics()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="mlserve-jobs", daemon=True)
        self.backend: RedisBackend | None = None
        self.store: SharedJobStore | None = None
        self.manager: ModelManager | None = None
        self.runner: JobRunner | None = None
        # Told when Celery's consumer may have stopped taking tasks (see _watch_queue).
        self.on_stall: Callable[[str], None] | None = None
        self.active = 0
        self._active_lock = threading.Lock()
        self._was_down = False
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        """Connect to Redis and load the registry's models (before any task is taken)."""
        self._thread.start()
        self._call(self._open())

    async def _open(self) -> None:
        from mlserve.registry import open_models
        from mlserve.serving.jobrunner import JobRunner
        from mlserve.serving.manager import ModelManager

        settings = self.settings
        backend = RedisBackend.from_settings(settings)
        if backend is None:
            raise ConfigError("mlserve worker needs redis.url (MLSERVE_REDIS__URL)")
        await backend.start()
        backend.on_change(self._redis_changed)
        self.backend = backend
        self.store = open_shared_job_store(settings, backend)
        metrics = self.metrics
        self.manager = ModelManager(settings, open_models(settings), metrics)
        metrics.export_models(self.manager.models)  # mlserve_model_info, as the server's
        await self.manager.load_all()
        self.runner = JobRunner(
            store=self.store,
            manager=self.manager,
            metrics=metrics,
            concurrency=0,  # no claim loops: Celery hands jobs over one task at a time
            lease_s=settings.jobs.lease_s,
        )
        loaded = sorted(n for n, s in self.manager.models.items() if s.status == "loaded")
        log.info("worker ready: models %s", ", ".join(loaded) or "none")
        self._watchdog = asyncio.get_running_loop().create_task(
            self._watch_queue(), name="consumer-watchdog"
        )

    # Celery's consumer can lose its connection during a Redis outage without noticing (the
    # loop goes on, the queue is no longer read): after an outage, and whenever tasks wait in
    # the queue while this worker is idle, it is made to reconnect.
    def _redis_changed(self, up: bool) -> None:
        if not up:
            self._was_down = True
        elif self._was_down:
            self._was_down = False
            self._stalled("Redis is back after an outage")

    def _stalled(self, reason: str) -> None:
        if self.on_stall is not None:
            self.on_stall(reason)

    async def _watch_queue(self) -> None:
        backend = self.backend
        assert backend is not None  # noqa: S101 - started by _open after the backend
        interval = max(2.0, 4 * self.settings.redis.health_check_interval_s)
        queue = queue_name(self.settings)
        strikes = 0
        while not self._closing:
            await asyncio.sleep(interval)  # a timer between looks at the queue
            if self._closing or self.active or not backend.available:
                strikes = 0
                continue
            try:
                waiting = int(await backend.client.llen(queue))
            except Exception as exc:  # noqa: BLE001 - Redis away: the backend's state says so
                log.warning("cannot read the length of job queue %s: %s", queue, exc)
                strikes = 0
                continue
            strikes = strikes + 1 if waiting else 0
            if strikes >= 2:
                strikes = 0
                self._stalled(f"{waiting} task(s) wait in the queue while this worker is idle")

    def run(self, job_id: str) -> dict[str, Any]:
        """Score one job (called on a Celery pool thread; blocks until the job is done,
        failed, given back, or out of this worker's hands)."""
        with self._active_lock:
            self.active += 1
        try:
            return self._call(self._run(job_id))
        finally:
            with self._active_lock:
                self.active -= 1

    async def _run(self, job_id: str) -> dict[str, Any]:
        store, manager, runner = self.store, self.manager, self.runner
        if store is None or manager is None or runner is None:  # _open() sets all three first
            raise RuntimeError("the worker's job runner is not open")
        owner = _owner_id()
        try:
            outcome, job = await store.claim(job_id, owner, self.settings.jobs.lease_s)
        except JobsUnavailableError as exc:
            # The sweeper dispatches the job again once Redis is back.
            log.warning("job %s: cannot claim it: %s", job_id, exc.message)
            return {"job_id": job_id, "outcome": "unavailable"}
        if outcome != "claimed" or job is None:
            log.info("job %s: nothing to do here (%s)", job_id, outcome)
            return {"job_id": job_id, "outcome": outcome}
        log.info(
            "job %s: working on it (attempt %d, %d/%d rows done, model %s:%d)",
            job.id, job.attempts, job.done, job.total, job.model, job.version,
        )  # fmt: skip
        if job.model not in manager.models:
            # Registered after this worker started: serve it from now on.
            try:
                await manager.load(job.model)
            except MlserveError as exc:
                log.warning("job %s: cannot load model %s: %s", job.id, job.model, exc.message)
        await runner.process(job, owner)
        with contextlib.suppress(MlserveError):
            job = await store.get(job_id)
        return {"job_id": job_id, "outcome": job.status, "done": job.done, "total": job.total}

    def request_stop(self) -> None:
        """Warm shutdown: each job in progress is given back after its current chunk (and
        dispatched again at once), so the task returns instead of holding the shutdown."""
        if self.runner is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.runner.request_stop)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    async def _close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait({self._watchdog}, timeout=5.0)
        if self.manager is not None:
            await self.manager.close()
        if self.backend is not None:
            await self.backend.close()


# ---------------------------------------------------------------------------- `mlserve worker`
def _leave_logging_alone(**_: Any) -> None:
    """Celery's setup_logging signal: with a receiver, Celery keeps its hands off the handlers
    the CLI installed."""


def _fail_consumer(reason: str) -> None:
    """Run on the consumer's event loop: a connection error there makes Celery drop the
    broker connection and connect again (its own recovery path)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    raise RedisConnectionError(f"reconnecting: {reason}")


def serve_metrics(runtime: WorkerRuntime, host: str, port: int) -> Callable[[], None]:
    """Serve the worker's /metrics on host:port (prometheus_client's HTTP server, on a thread
    of its own); returns the function that stops it."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=runtime.metrics.registry)
    except OSError as exc:
        raise MlserveError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    log.info("worker metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def run_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Load the models, then consume the job queue until SIGTERM/SIGINT; the exit code.

    Pool: `solo` for one job at a time, `threads` for more: the threads share this process's
    one copy of the models and its event loop, and their rows meet in the model's batcher.
    Not prefork: each child would load every model again and run its own event loop; for
    more CPU run more `mlserve worker` processes (or pods)."""
    mlserve_logger = logging.getLogger("mlserve")
    celery_logger = logging.getLogger("celery")
    celery_logger.handlers[:] = mlserve_logger.handlers
    celery_logger.setLevel(mlserve_logger.level)
    celery_logger.propagate = False
    signals = celery_module("celery.signals")
    signals.setup_logging.connect(_leave_logging_alone, weak=False)

    runtime = WorkerRuntime(settings)
    stop_metrics: Callable[[], None] | None = None
    try:
        if settings.worker.metrics_port:
            # Before the models load: scrapes see the worker (and a taken port fails) at once.
            stop_metrics = serve_metrics(runtime, metrics_host, settings.worker.metrics_port)
        runtime.start()
        app = make_celery(settings)
        _register_task(app, runtime)

        def shutting_down(**_: Any) -> None:
            runtime.request_stop()

        signals.worker_shutting_down.connect(shutting_down, weak=False)
        worker: Any = None

        def reconnect(reason: str) -> None:
            hub = getattr(worker, "hub", None)
            if hub is None:
                return
            log.warning("making Celery's consumer reconnect to the broker: %s", reason)
            hub.call_soon(_fail_consumer, reason)  # thread-safe: wakes the consumer's loop

        runtime.on_stall = reconnect
        worker = app.Worker(
            hostname=f"mlserve-{os.getpid()}@{socket.gethostname()}",
            pool="solo" if concurrency <= 1 else "threads",
            concurrency=max(1, concurrency),
            queues=[queue_name(settings)],
            loglevel=logging.getLevelName(mlserve_logger.level),
            quiet=True,
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
        )
        # Said on every lost broker connection; the setting it asks about is chosen on
        # purpose (see make_celery). Added after the Worker set its own warning filters.
        warnings.filterwarnings(
            "ignore", message="(?s).*worker_cancel_long_running_tasks_on_connection_loss"
        )
        log.info(
            "worker consuming queue %s on redis %s (%s pool, concurrency %d)",
            queue_name(settings),
            display_url(redis_url(settings) or ""),
            "solo" if concurrency <= 1 else "threads",
            max(1, concurrency),
        )
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        runtime.close()
        if stop_metrics is not None:
            stop_metrics()
