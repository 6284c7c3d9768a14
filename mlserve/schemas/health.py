"""Health, readiness and liveness answers (GET /api/health, /api/ready, /api/live)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples

__all__ = [
    "DependencyStatus",
    "DetailedHealthResponse",
    "DetailedModelHealth",
    "HealthResponse",
    "LiveResponse",
    "ModelHealth",
    "ProcessInfo",
    "ReadyResponse",
]

DependencyStatus = Literal["up", "down"]


class ModelHealth(BaseModel):
    name: str
    version: int | None
    # unloaded: not in memory now and loaded by its next request (server.max_loaded,
    # server.memory_budget_mb); no smoke prediction, and not counted against the server.
    status: Literal["healthy", "degraded", "unloaded"]
    latency_ms: float | None = None
    error: str | None = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.HEALTH_RESPONSE})

    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_s: float
    models: list[ModelHealth]
    dependencies: dict[str, DependencyStatus] = Field(
        default_factory=dict,
        description="Shared services the server uses (`redis` when redis.url is set) and "
        "whether they answer; one that is down makes a healthy server `degraded` (predictions "
        "go on without it).",
    )


class DetailedModelHealth(ModelHealth):
    loaded_at: datetime | None = None
    predictions: int = 0
    queue_depth: int = 0


class ProcessInfo(BaseModel):
    pid: int
    cpu_percent: float
    cpu_seconds: float
    rss_bytes: int
    threads: int
    open_requests: int


class DetailedHealthResponse(HealthResponse):
    model_config = ConfigDict(json_schema_extra={"examples": examples.DETAILED_HEALTH_RESPONSE})

    models: list[DetailedModelHealth]  # type: ignore[assignment]
    process: ProcessInfo


class ReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.READY_RESPONSE})

    ready: bool
    models: dict[str, Literal["loaded", "failed", "loading", "unloaded"]]


class LiveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.LIVE_RESPONSE})

    live: bool = True
