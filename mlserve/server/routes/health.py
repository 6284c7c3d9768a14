"""Liveness, readiness and health (real smoke predictions), plus Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from mlserve import __version__
from mlserve.errors import MlserveError
from mlserve.schemas import (
    DependencyStatus,
    DetailedHealthResponse,
    DetailedModelHealth,
    HealthResponse,
    LiveResponse,
    ModelHealth,
    ProcessInfo,
    ReadyResponse,
)
from mlserve.server.deps import StateDep
from mlserve.serving.manager import ServedModel
from mlserve.serving.state import AppState

router = APIRouter(tags=["health"])

SMOKE_TIMEOUT_S = 5.0

# Examples of the 503 answers (the models' own examples show the usual 200).
NOT_READY_EXAMPLE = {"ready": False, "models": {"iris": "loaded", "sentiment": "loading"}}
UNHEALTHY_MODEL = {
    "name": "sentiment",
    "version": None,
    "status": "degraded",
    "latency_ms": None,
    "error": "artifact of sentiment:3 does not match its registered sha256 (5b0e7c1d93a2… != "
    "e92c18b23fc0…): changed after registration; refusing to load it",
}
UNHEALTHY_EXAMPLE = {
    "status": "unhealthy",
    "version": "0.1.0",
    "uptime_s": 12.034,
    "models": [UNHEALTHY_MODEL],
    "dependencies": {},
}
UNHEALTHY_DETAILED_EXAMPLE = {
    **UNHEALTHY_EXAMPLE,
    "models": [{**UNHEALTHY_MODEL, "loaded_at": None, "predictions": 0, "queue_depth": 0}],
    "process": {
        "pid": 41872,
        "cpu_percent": 0.0,
        "cpu_seconds": 2.91,
        "rss_bytes": 141295616,
        "threads": 9,
        "open_requests": 1,
    },
}
METRICS_EXAMPLE = """\
# HELP mlserve_predictions_total Predictions by model, version and predicted class.
# TYPE mlserve_predictions_total counter
mlserve_predictions_total{model="sentiment",version="3",predicted_class="positive"} 24187.0
mlserve_predictions_total{model="sentiment",version="3",predicted_class="negative"} 17902.0
mlserve_predictions_total{model="sentiment",version="3",predicted_class="neutral"} 10321.0
mlserve_predictions_total{model="iris",version="2",predicted_class="setosa"} 641.0
# HELP mlserve_models_loaded Model versions loaded and serving.
# TYPE mlserve_models_loaded gauge
mlserve_models_loaded 4.0
"""


def _json_example(example: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"example": example}}}


@router.get("/api/live", response_model=LiveResponse, summary="Liveness probe")
async def live() -> LiveResponse:
    """The process is up and its event loop answers."""
    return LiveResponse(live=True)


@router.get(
    "/api/ready",
    response_model=ReadyResponse,
    responses={
        503: {
            "model": ReadyResponse,
            "description": "Not ready yet, or shutting down.",
            **_json_example(NOT_READY_EXAMPLE),
        }
    },
    summary="Readiness probe",
)
async def ready(state: StateDep) -> Response:
    """200 once model loading is done and at least one model serves; 503 before and on shutdown."""
    statuses = {name: served.status for name, served in state.manager.models.items()}
    is_ready = state.is_ready
    body = ReadyResponse(ready=is_ready, models=statuses)
    return Response(
        body.model_dump_json(), status_code=200 if is_ready else 503, media_type="application/json"
    )


async def _smoke(served: ServedModel) -> ModelHealth:
    runtime = served.current
    if runtime is None and served.on_demand and served.error is None:
        return ModelHealth(name=served.name, version=None, status="unloaded")
    if runtime is None:
        return ModelHealth(
            name=served.name, version=None, status="degraded", error=served.error or "not loaded"
        )
    breaker = runtime.batcher.breaker
    if breaker is not None and breaker.state == "open":
        # Failing fast: no smoke prediction (once the cooldown is over, one may be the probe).
        _, error = served.health
        return ModelHealth(
            name=served.name, version=runtime.version, status="degraded", error=error
        )
    started = time.perf_counter()
    try:
        await asyncio.wait_for(
            runtime.batcher.submit(runtime.model.sample_input()), SMOKE_TIMEOUT_S
        )
    except TimeoutError:
        error = f"smoke prediction took over {SMOKE_TIMEOUT_S:.0f} s"
    except MlserveError as exc:
        error = exc.message
    else:
        return ModelHealth(
            name=served.name,
            version=runtime.version,
            status="healthy",
            latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )
    return ModelHealth(name=served.name, version=runtime.version, status="degraded", error=error)


def _dependencies(state: AppState) -> dict[str, DependencyStatus]:
    """Shared services and whether they answer (the backend's state, kept by its pings)."""
    if state.redis is None:
        return {}
    return {"redis": "up" if state.redis.available else "down"}


async def _health(state: AppState) -> tuple[str, list[ModelHealth], dict[str, DependencyStatus]]:
    results = await asyncio.gather(*(_smoke(s) for s in state.manager.models.values()))
    dependencies = _dependencies(state)
    healthy = sum(r.status == "healthy" for r in results)
    # Models unloaded by the budget load on their next request: they count for nothing.
    judged = [r for r in results if r.status != "unloaded"]
    if results and healthy == len(judged):
        # A shared service down costs features (shared limits, cache, jobs), not predictions.
        overall = "healthy" if all(v == "up" for v in dependencies.values()) else "degraded"
    elif healthy or len(judged) < len(results):  # some model can still answer
        overall = "degraded"
    else:
        overall = "unhealthy"
    return overall, list(results), dependencies


@router.get(
    "/api/health",
    response_model=HealthResponse,
    responses={
        503: {
            "model": HealthResponse,
            "description": "No model can predict.",
            **_json_example(UNHEALTHY_EXAMPLE),
        }
    },
    summary="Health with smoke predictions",
)
async def health(state: StateDep) -> Response:
    """healthy / degraded per model from a real smoke prediction, and whether shared services
    (Redis) answer; 503 when no model can predict."""
    overall, models, dependencies = await _health(state)
    body = HealthResponse(
        status=overall,
        version=__version__,
        uptime_s=round(state.uptime_s, 3),
        models=models,
        dependencies=dependencies,
    )
    return Response(
        body.model_dump_json(),
        status_code=503 if overall == "unhealthy" else 200,
        media_type="application/json",
    )


@router.get(
    "/api/health/detailed",
    response_model=DetailedHealthResponse,
    responses={
        503: {
            "model": DetailedHealthResponse,
            "description": "No model can predict.",
            **_json_example(UNHEALTHY_DETAILED_EXAMPLE),
        }
    },
    summary="Health plus process and per-model details",
)
async def health_detailed(state: StateDep) -> Response:
    """Health plus process CPU, RSS, open requests, and per-model load time and counts."""
    overall, models, dependencies = await _health(state)
    detailed = []
    for item in models:
        served = state.manager.models[item.name]
        runtime = served.current
        loaded_at: datetime | None = runtime.loaded_at if runtime else None
        detailed.append(
            DetailedModelHealth(
                **item.model_dump(),
                loaded_at=loaded_at,
                predictions=runtime.predictions if runtime else 0,
                queue_depth=runtime.batcher.queue_depth if runtime else 0,
            )
        )
    proc = state.process
    with proc.oneshot():
        cpu = proc.cpu_times()
        info = ProcessInfo(
            pid=proc.pid,
            cpu_percent=proc.cpu_percent(interval=None),
            cpu_seconds=round(cpu.user + cpu.system, 3),
            rss_bytes=proc.memory_info().rss,
            threads=proc.num_threads(),
            open_requests=state.open_requests,
        )
    body = DetailedHealthResponse(
        status=overall,
        version=__version__,
        uptime_s=round(state.uptime_s, 3),
        models=detailed,
        process=info,
        dependencies=dependencies,
    )
    return Response(
        body.model_dump_json(),
        status_code=503 if overall == "unhealthy" else 200,
        media_type="application/json",
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"example": METRICS_EXAMPLE}},
            "description": "Prometheus text.",
        }
    },
    summary="Prometheus metrics",
    tags=["metrics"],
)
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition of the server's metrics."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
