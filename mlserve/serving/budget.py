"""server.max_loaded / memory_budget_mb: which loaded runtimes to unload to make room."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mlserve.config import Settings
from mlserve.registry import ModelRef
from mlserve.runtime.footprint import deep_size
from mlserve.runtime.model import LoadedModel
from mlserve.serving.runtimes import Runtime, ServedModel, loaded_runtimes

log = logging.getLogger(__name__)

# Memory of a runtime beyond its model's objects (its batcher, model thread, metrics children):
# about 25 KiB measured per loaded logistic regression, rounded up.
RUNTIME_OVERHEAD_BYTES = 32 * 1024
# The longest grace of a runtime unloaded to make room: it was idle and the least recently
# used, so a request still holding it is rare; it stops as soon as none does (retire.py), and
# only one held longer keeps its memory alive past the budget until then.
EVICT_GRACE_S = 0.5


def estimate_bytes(model: LoadedModel) -> int:
    """A loaded model's memory: the bytes its objects and arrays hold (deep_size; at least its
    artifact's size, for memory a native library keeps out of sight), plus the runtime's."""
    return max(deep_size(model), model.metadata.size_bytes) + RUNTIME_OVERHEAD_BYTES


class ModelBudget:
    """The limits, the protected models, and the loads under way (with the bytes reserved for
    them, their artifacts' sizes, so concurrent loads cannot all take the same room)."""

    def __init__(self, settings: Settings) -> None:
        server = settings.server
        self.max_loaded = server.max_loaded
        self.budget_bytes = int(server.memory_budget_mb * 2**20)
        self.limited = self.max_loaded > 0 or self.budget_bytes > 0
        # serve --model and server.pinned_models: loaded at startup, never unloaded.
        self.protected = frozenset(
            [ModelRef.parse(r).name for r in server.models] + server.pinned_models
        )
        self.loading = 0
        self.loading_bytes = 0

    def over(self, count: int, used: int) -> bool:
        return (0 < self.max_loaded < count) or (0 < self.budget_bytes < used)

    def evictable(self, served: ServedModel, runtime: Runtime) -> bool:
        """Whether `runtime` may be unloaded: not of a protected model nor a version its traffic
        settings keep (splits, shadow); its model not being loaded or swapped (its lock is
        free); and idle: no request queued or running in its batcher."""
        batcher = runtime.batcher
        return (
            served.name not in self.protected
            and runtime.version not in served.pinned
            and not served.lock.locked()
            and batcher.queue_depth == 0
            and batcher.in_flight == 0
        )

    def victims(
        self, models: Iterable[ServedModel], keep: Runtime | None = None
    ) -> list[tuple[ServedModel, Runtime]]:
        """The least recently used idle runtimes (never `keep`: the one just loaded) to unload
        so that the loaded ones and the loads under way fit. When every other runtime is busy
        or protected the budget is exceeded for now (a warning): requests are served rather
        than refused, and the next load tries again."""
        if not self.limited:
            return []
        loaded = [(served, runtime) for served in models for runtime in loaded_runtimes(served)]
        count = len(loaded) + self.loading
        used = sum(runtime.estimated_bytes for _, runtime in loaded) + self.loading_bytes
        chosen: list[tuple[ServedModel, Runtime]] = []
        if not self.over(count, used):
            return chosen
        candidates = sorted(
            (pair for pair in loaded if pair[1] is not keep and self.evictable(*pair)),
            key=lambda pair: pair[1].last_used,
        )
        for served, runtime in candidates:
            if not self.over(count, used):
                return chosen
            chosen.append((served, runtime))
            count -= 1
            used -= runtime.estimated_bytes
        if self.over(count, used):
            log.warning(
                "over the model budget (%d loaded or loading, max_loaded %d; ~%.1f MB, "
                "memory_budget_mb %.1f): the other loaded models are busy or pinned",
                count,
                self.max_loaded,
                used / 2**20,
                self.budget_bytes / 2**20,
            )
        return chosen
