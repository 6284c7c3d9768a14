"""Per-app state object kept on app.state.mlserve (no module-level mutable state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from mlserve.config import Settings
from mlserve.jobs import JobDispatcher, JobStore
from mlserve.registry import Registry
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.rollout import RolloutController
from mlserve.serving.service import PredictionService
from mlserve.serving.traffic import TrafficController

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.feedback import FeedbackRecorder
    from mlserve.serving.quality import QualityService


@dataclass(eq=False)
class AppState:
    settings: Settings
    registry: Registry
    metrics: ServerMetrics
    manager: ModelManager
    started: float = field(default_factory=time.monotonic)
    draining: bool = False
    open_requests: int = 0
    # One Process object for the app's life: cpu_percent() measures since its previous call,
    # so a fresh object per request would always report 0.0.
    process: psutil.Process = field(default_factory=psutil.Process)
    # Redis shared by the replicas (redis.url), or None: rate limits, cache, revocations, jobs.
    redis: RedisBackend | None = None
    # Async jobs: set in the lifespan (None until then, or when the store cannot be opened).
    jobs: JobStore | None = None
    job_dispatcher: JobDispatcher | None = None
    # Feedback (feedback.enabled): the service behind /api/feedback,
    # /api/models/{name}/quality and the quality metrics (its recorder: `feedback`).
    quality: QualityService | None = None
    # Splits, shadows, prediction cache and the registry watcher (built from the settings).
    traffic: TrafficController = field(init=False)
    # The one prediction path every route, the fast lane and the job runner call.
    service: PredictionService = field(init=False)
    # Canary rollouts (their store is opened in the lifespan).
    rollouts: RolloutController = field(init=False)

    def __post_init__(self) -> None:
        self.process.cpu_percent(interval=None)  # start the first measurement interval
        self.traffic = TrafficController(
            settings=self.settings, manager=self.manager, metrics=self.metrics
        )
        self.service = PredictionService(
            manager=self.manager, traffic=self.traffic, metrics=self.metrics
        )
        self.rollouts = RolloutController(
            settings=self.settings, manager=self.manager, traffic=self.traffic, metrics=self.metrics
        )
        self.service.rollouts = self.rollouts

    @property
    def feedback(self) -> FeedbackRecorder | None:
        """The buffer the prediction paths record into (None while feedback is off)."""
        return self.service.feedback

    @feedback.setter
    def feedback(self, recorder: FeedbackRecorder | None) -> None:
        self.service.feedback = recorder

    @property
    def is_ready(self) -> bool:
        """Readiness (/api/ready, /v2/health/ready): loading done, not draining, and at least
        one model serving (or loading on its first request: server.max_loaded)."""
        manager = self.manager
        return (
            manager.loading_done
            and not self.draining
            and any(
                served.status == "loaded" or served.on_demand for served in manager.models.values()
            )
        )

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started
