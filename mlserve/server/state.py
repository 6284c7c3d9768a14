"""Per-app state object kept on app.state.mlserve (no module-level mutable state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started
