"""Per-app state object kept on app.state.mlserve (no module-level mutable state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil

from mlserve.config import Settings
from mlserve.registry import Registry
from mlserve.server.manager import ModelManager
from mlserve.server.metrics import ServerMetrics


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

    def __post_init__(self) -> None:
        self.process.cpu_percent(interval=None)  # start the first measurement interval

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started
