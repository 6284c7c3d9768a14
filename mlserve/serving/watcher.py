"""Hot reload: poll the registry's state token; swap in moved aliases, serve new models."""

from __future__ import annotations

import asyncio
import logging

from mlserve.errors import MlserveError
from mlserve.serving.manager import ModelManager, ReloadOutcome

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Every `interval_s` (0: never), compare the registry's state token with the last one
    seen; when it changed, re-read every served model's aliases and reload the models whose
    reference now resolves to another version (loaded in the background, swapped atomically),
    and load the models registered since, when the server serves the whole registry
    (server.models unset).

    Replicas sharing one registry directory each run their own watcher, so an alias moved
    anywhere reaches all of them within one interval."""

    def __init__(self, manager: ModelManager, *, interval_s: float) -> None:
        self.manager = manager
        self.interval_s = interval_s
        self.token: str | None = None  # None: the first check looks at every model
        self._failing = False

    async def run(self) -> None:
        if self.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    async def check(self) -> list[ReloadOutcome]:
        """One look at the registry; returns the reloads that swapped a version or loaded a
        new model (previous_version None)."""
        try:
            token = await asyncio.to_thread(self.manager.registry.state_token)
        except (OSError, MlserveError) as exc:
            if not self._failing:
                log.warning("cannot read the registry to watch it: %s", exc)
            self._failing = True
            return []
        if self._failing:
            log.info("the registry is readable again")
            self._failing = False
        if token == self.token:
            return []
        self.token = token
        try:
            new = await asyncio.to_thread(self.manager.unserved_names)
        except (OSError, MlserveError) as exc:
            log.warning("watch: cannot list the registry's models: %s", exc)
            new = []
        swapped = []
        for name in [*self.manager.models, *new]:
            served = self.manager.models.get(name)
            if served is not None and served.status in ("unloaded", "loading"):
                continue  # unloaded on purpose (V2 repository API), or busy loading
            try:
                outcome = await self.manager.reload(name)
            except MlserveError as exc:
                # The old version keeps serving; the next registry change (or a reload
                # request) tries again.
                log.error("watch: cannot reload %s: %s", name, exc.message)
                continue
            except Exception:
                log.exception("watch: cannot reload %s", name)
                continue
            if outcome.changed:
                log.info(
                    "watch: %s now serves version %s (was %s)",
                    name,
                    outcome.version,
                    outcome.previous_version or "not served",
                )
                swapped.append(outcome)
        return swapped
