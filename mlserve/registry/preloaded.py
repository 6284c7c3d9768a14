"""Models read before a fork, taken by the forked processes instead of reading them again.

`serve --workers N` on Linux reads the models its workers load at startup in the supervisor
(Registry.preload), then forks: every worker inherits the estimators, their pages shared
copy-on-write (measured: a worker serving a 78 MB random forest holds ~30 MB of its own
instead of ~180 MB; docs/benchmarks.md). A registry hands a version's kept estimator only for
the same format and sha256 (the bytes the supervisor read and verified), a model file's only
for the same path; each is taken once per process, so a later load of that version (after an
eviction or a reload) reads its artifact as before and no two runtimes share one estimator.

Process-wide by nature: what is handed over is the memory of this process at the fork. Only
the fork supervisor fills it, before it forks; a process that never forked finds it empty.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

__all__ = ["PRELOADED", "Preloaded"]


class Preloaded:
    """Objects kept under a key until one process takes them (at most once each)."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, Any] = {}
        self._lock = threading.Lock()  # workers load models in threads

    def keep(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._kept[key] = value

    def take(self, key: Hashable) -> Any | None:
        """The value kept under `key`, removed; None when there is none."""
        if not self._kept:  # every process that never forked: no lock taken
            return None
        with self._lock:
            return self._kept.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)


PRELOADED = Preloaded()
"""The one hand-over of this process (filled by mlserve.server.prefork before it forks)."""
