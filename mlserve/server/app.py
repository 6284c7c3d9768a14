"""create_app(settings): the FastAPI app, its lifespan (model loading) and middleware."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mlserve import __version__, schemas
from mlserve.cache import make_prediction_cache
from mlserve.config import Settings
from mlserve.errors import ConfigError, MlserveError
from mlserve.registry import open_models
from mlserve.schemas import v2 as schemas_v2
from mlserve.server.auth import AccessPolicy
from mlserve.server.docs import install_docs
from mlserve.server.errors import install_error_handlers
from mlserve.server.eventloop import GATE_STATE_KEY, ConnectionGate, cap_ready_events
from mlserve.server.ids import RequestIds
from mlserve.server.middleware.auth import with_auth
from mlserve.server.middleware.context import RequestContextMiddleware
from mlserve.server.middleware.fastlane import FastPredictMiddleware
from mlserve.server.middleware.ratelimit import EXEMPT_PATHS, with_rate_limit
from mlserve.server.openapi import install_openapi
from mlserve.server.protocol import OVER_THE_CAP
from mlserve.server.routes import (
    aliases,
    compare,
    feedback,
    health,
    jobs,
    models,
    predict,
    rollouts,
    v2,
)
from mlserve.server.shedding import SHED_STATE_KEY, Shedder
from mlserve.serving.jobrunner import start_jobs
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.state import AppState

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.server.tracing import Tracing

log = logging.getLogger(__name__)

DESCRIPTION = """
Inference server for scikit-learn models from an mlserve registry.

Every error has one shape: `{"error": {"code", "message", "request_id"}}`.
Send `X-Request-ID` to correlate requests with logs; it is echoed on every response.
"""


def drain_on_signals(state: AppState) -> Callable[[], None]:
    """Chain onto the server's SIGTERM/SIGINT handlers so readiness turns 503 the moment a
    shutdown starts, while in-flight requests finish. Returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals are only delivered to the main thread (e.g. TestClient)
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if not state.draining:
            state.draining = True
            log.info("received %s: draining, ready answers 503", signal.Signals(signum).name)
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            signal.signal(sig, prev)

    return restore


# Allocations between young collections (CPython's default: 700). Every connection and request
# in flight is a few dozen tracked objects, all rescanned by each young collection, and what
# survives soon triggers full ones: with 2,000 busy connections collections took ~12 % of the
# server's time (4,195 young, 381 middle and 33 full ones in 20 s); at 10,000, ~3 %, for
# ~10 % more answers a second and no RSS growth (docs/benchmarks.md, "Seventh pass").
GC_YOUNG_THRESHOLD = 10_000


def _freeze_heap(_: object) -> None:
    """Once models are loaded, move every object alive now out of the garbage collector's
    reach: the long-lived heap (models, FastAPI, sklearn) is then not rescanned by full
    collections, which otherwise stall the event loop for tens of milliseconds under load.
    Then collect less often (GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# Each shutdown step gets server.graceful_timeout plus this; a step still running then is
# logged with where it waits, and the server stops without it: a SIGTERM always ends the
# process, rather than a lifespan waiting for good on something that never comes.
SHUTDOWN_SLACK_S = 5.0


async def _bounded(step: str, work: Awaitable[Any], timeout: float) -> None:
    """Await `work` (one shutdown step) for at most `timeout` seconds. Past that it is
    cancelled but not waited for (a step that ignores cancellation would hold the shutdown
    again), and an error names the step and the awaits it was stuck in."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        task.result()  # its own error, as before
        return
    log.error(
        "shutdown: %s did not finish within %.1f s (waiting in %s); stopping without it",
        step,
        timeout,
        " <- ".join(reversed(_awaiting(task))) or "?",
    )
    task.cancel()


def _awaiting(task: asyncio.Future[Any]) -> list[str]:
    """Where a task is suspended: each coroutine of its await chain (file:line function),
    outermost first (the innermost awaits a future: what was to set it is the question)."""
    chain: list[str] = []
    coro: Any = getattr(task, "get_coro", lambda: None)()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:  # a future's iterator, or a coroutine that has finished
            break
        code = frame.f_code
        chain.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_qualname}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def _redis_backend(settings: Settings, metrics: ServerMetrics) -> RedisBackend | None:
    """The Redis shared by the replicas when redis.url is set (ConfigError without the
    mlserve[redis] extra); None otherwise, and then neither redis-py nor Celery is imported."""
    if settings.redis.url is None:
        return None
    from mlserve.backends.redis import RedisBackend, export_state, require_redis

    require_redis(celery=True)
    backend = RedisBackend.from_settings(settings)
    if backend is not None:
        export_state(backend, metrics.registry)
    return backend


def _start_tracing(settings: Settings, manager: ModelManager) -> Tracing | None:
    """With tracing.enabled, a span per request and per model call (ConfigError without the
    otel extra); None otherwise, and then OpenTelemetry is not imported at all."""
    if not settings.tracing.enabled:
        return None
    try:
        from mlserve.server.tracing import Tracing
    except ImportError as exc:
        raise ConfigError(
            f"tracing.enabled needs OpenTelemetry ({exc.name} is not installed): "
            "pip install 'mlserve-sklearn[otel]'"
        ) from None
    tracing = Tracing.start()
    # Before any model loads (in the lifespan): every batcher is made with the call tracer.
    manager.batching = dataclasses.replace(manager.batching, tracer=tracing.model_calls)
    return tracing


def _share_cache(state: AppState, redis: RedisBackend) -> None:
    """With redis.url the prediction cache lives in Redis, shared by every replica (entries
    expire after cache.ttl_s; Redis's maxmemory bounds the size)."""
    cache = make_prediction_cache(state.settings.cache, redis=redis)
    state.traffic.cache = cache
    state.metrics.cache_entries.set_function(cache.__len__)  # held in Redis, not here


async def _start_rollouts(state: AppState) -> None:
    """Open the rollout store (Redis with redis.url, else SQLite beside the job store) and
    start following rollouts; a store that cannot be opened is logged, not fatal (rollout
    requests answer 503)."""
    import sqlite3

    from mlserve.rollouts import open_rollout_store

    state.rollouts.quality = state.quality
    try:
        store = await open_rollout_store(state.settings, redis=state.redis)
    except (OSError, sqlite3.Error, MlserveError) as exc:
        error = "the rollout store cannot be opened"
        log.error("%s; rollouts are off: %s", error, exc)
        await state.rollouts.start(None, error)
        return
    await state.rollouts.start(store)


class MlserveApp(FastAPI):
    """FastAPI whose HTTP requests first pass mlserve's own layers as plain ASGI (`front`:
    request context, auth, rate limits, the predict fast lane), so that FastAPI's per-request
    entry work is paid only by the requests it routes; lifespan events go to FastAPI."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and scope["type"] == "http":
            scope["app"] = self
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself: routing, validation, the routes' error handlers."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    background_load: bool = False,
    freeze_heap: bool = False,
    fast_lane: bool = True,
) -> MlserveApp:
    """Build an app over `settings`; models load in its lifespan (in the background when asked,
    so liveness answers while big models load). `freeze_heap` is for server processes (see
    _freeze_heap); tests building many apps in one process leave it off, and compare answers
    with `fast_lane=False` (every prediction through the FastAPI route)."""
    registry = open_models(settings)  # server.model_paths: the files, no registry
    metrics = ServerMetrics()
    manager = ModelManager(settings, registry, metrics)
    metrics.export_models(manager.models)
    redis = _redis_backend(settings, metrics)
    tracing = _start_tracing(settings, manager)
    state = AppState(
        settings=settings, registry=registry, metrics=metrics, manager=manager, redis=redis
    )
    if redis is not None and settings.cache.enabled:
        _share_cache(state, redis)
    if settings.feedback.enabled:
        from mlserve.serving.quality import QualityService

        # Built here, so predictions record from the first request; the store is opened (and
        # attached to the recorder) in the lifespan.
        state.quality = QualityService(
            settings=settings, manager=manager, metrics=metrics, redis=redis
        )
        state.feedback = state.quality.recorder

    ids = RequestIds()  # one per app: the request middleware and the protocol's refusals
    shedder = Shedder(manager, metrics, ids)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        loader = asyncio.create_task(manager.load_all(), name="load-models")
        if freeze_heap:
            loader.add_done_callback(_freeze_heap)
        if not background_load:
            await loader
        if redis is not None:
            await redis.start()  # an unreachable Redis is logged, not fatal (health: degraded)
        stop_jobs = await start_jobs(state)
        if state.quality is not None:
            await state.quality.start()  # a store that cannot open is logged, not fatal
        state.traffic.start(loader)  # split/shadow preloads, then the registry watcher
        await _start_rollouts(state)
        restore = drain_on_signals(state)
        gate = ConnectionGate(
            settings.server.limit_concurrency or None, OVER_THE_CAP, metrics.connections_refused
        )
        cap_ready_events(asyncio.get_running_loop(), settings.server.events_per_turn, gate)
        try:
            # The lifespan state reaches the connections: the protocol refuses predictions at
            # overload through it (mlserve.server.shedding) and hands the gate its count.
            yield {SHED_STATE_KEY: shedder, GATE_STATE_KEY: gate}
        finally:
            state.draining = True
            restore()
            if not loader.done():
                loader.cancel()
            bound = settings.server.graceful_timeout + SHUTDOWN_SLACK_S
            # before the models: a job's chunk in flight needs its batcher
            await _bounded("async jobs", stop_jobs(), bound)
            await _bounded("rollouts", state.rollouts.close(), bound)
            await _bounded("traffic", state.traffic.close(), bound)
            await _bounded("models", manager.close(), bound)
            if state.quality is not None:  # writes the predictions still buffered
                await _bounded("model quality", state.quality.close(), bound)
            if redis is not None:
                await _bounded("redis", redis.close(), bound)
            metrics.close()
            if tracing is not None:  # exports the spans still buffered
                await _bounded("tracing", tracing.close(), bound)
            log.info("server stopped")

    app = MlserveApp(
        title="mlserve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs: the pages with their assets served from the package
        redoc_url=None,
    )
    app.state.mlserve = state
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(compare.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(jobs.router)
    app.include_router(feedback.router)
    app.include_router(aliases.router)
    app.include_router(rollouts.router)
    install_docs(app)

    @app.get(
        "/",
        tags=["meta"],
        summary="Service index",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {
                            "name": "mlserve",
                            "version": "0.1.0",
                            "limits": {
                                "max_batch_items": 100,
                                "max_text_length": 10000,
                                "max_body_bytes": 2097152,
                            },
                            "links": {
                                "docs": "/docs",
                                "redoc": "/redoc",
                                "openapi": "/openapi.json",
                                "models": "/api/models",
                                "predict": "/api/predict",
                                "health": "/api/health",
                                "ready": "/api/ready",
                                "live": "/api/live",
                                "metrics": "/metrics",
                            },
                        }
                    }
                }
            }
        },
    )
    async def index() -> dict[str, Any]:
        """Name, version, request limits and where to find docs, health and metrics."""
        return {
            "name": "mlserve",
            "version": __version__,
            "limits": {
                "max_batch_items": settings.server.max_batch_items,
                "max_text_length": settings.server.max_text_length,
                "max_body_bytes": settings.server.max_body_bytes,
            },
            "links": {
                "docs": "/docs",
                "redoc": "/redoc",
                "openapi": "/openapi.json",
                "models": "/api/models",
                "predict": "/api/predict",
                "health": "/api/health",
                "ready": "/api/ready",
                "live": "/api/live",
                "metrics": "/metrics",
            },
        }

    # Inside FastAPI: gzip for the routed answers (the fast lane compresses its own).
    app.add_middleware(GZipMiddleware, minimum_size=settings.server.gzip_min_bytes)
    install_openapi(
        app,
        modules=[schemas, schemas_v2],
        policy=AccessPolicy.from_settings(settings.auth),
        rate_limit_exempt=EXEMPT_PATHS if settings.rate_limit.enabled else None,
    )
    # Outside FastAPI, plain ASGI, outermost last: [CORS] > request context > auth >
    # [rate limit] > predict fast lane > FastAPI. A prediction is answered without entering
    # FastAPI at all; every other request pays FastAPI's entry only once it is past our layers.
    front: ASGIApp = app.routed
    if fast_lane:
        front = FastPredictMiddleware(front, app_state=state)
    # Auth first, so rate-limit buckets are per principal.
    front = with_rate_limit(front, settings, metrics, redis)
    front = with_auth(front, settings, metrics, redis)
    front = RequestContextMiddleware(
        front,
        metrics=metrics,
        app_state=state,
        shedder=shedder,
        ids=ids,
        max_body_bytes=settings.server.max_body_bytes,
        access_log_enabled=settings.logging.access_log,
    )
    if settings.server.cors_origins:
        # Outermost: a browser must be able to read every answer, the 401, 413 and 429 too.
        front = CORSMiddleware(
            front,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],  # every method routes use
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "X-Client-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "X-Process-Time",
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "X-Cache",
            ],
        )
    if tracing is not None:
        front = tracing.wrap(front)  # outermost: the span is current in every layer
    app.front = front
    return app
