"""Traffic control on the prediction path: A/B splits, shadow traffic and the prediction cache.

Every prediction path goes through the one PredictionService (service.py), which asks this
TrafficController for the version and the cache, so they behave the same. Everything here is
per process: a split or shadow set through the admin endpoint lives in this process only (with
several workers or replicas, configure each, or use settings). A rollout's split is the
exception: every replica follows the one in the rollout store (serving/rollout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter

from mlserve.cache import PredictionCache, make_prediction_cache
from mlserve.config import Settings
from mlserve.errors import ConfigError, InvalidInputError, MlserveError
from mlserve.rollouts.base import RolloutConflictError
from mlserve.runtime.model import LoadedModel, Prediction
from mlserve.serving.manager import InputKind, ModelManager, Runtime
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.watcher import RegistryWatcher

log = logging.getLogger(__name__)

MAX_SPLIT_VERSIONS = 10
SHADOW_MAX_QUEUE = 1000  # mirrored requests waiting per shadow version; beyond: dropped
SHADOW_MAX_BATCH = 64  # mirrored rows sent to the shadow in one call
SPLIT_RETRY_S = 30.0  # a split version that failed to load is tried again after this

# The version a split picked for the request being handled, or None. uvicorn runs each request
# in its own task, and a task has its own copy of the context, so this is per request; it lets
# the serving version answer instead when the picked one starts failing fast after it was
# picked (requests already queued on it when its breaker opens).
_split_pick: ContextVar[Runtime | None] = ContextVar("mlserve_split_pick", default=None)
Source = Literal["settings", "runtime", "rollout"]


# ---------------------------------------------------------------------------- A/B split
@dataclass(frozen=True, slots=True)
class Split:
    """Versions and their weights; a client's bucket in [0, 1) picks one."""

    weights: dict[int, float]
    versions: tuple[int, ...]
    bounds: tuple[float, ...]  # cumulative share of each version, the last one 1.0

    @classmethod
    def parse(cls, raw: Mapping[str, float]) -> Split:
        """{"3": 90, "4": 10}: version numbers and non-negative weights (any positive total)."""
        weights: dict[int, float] = {}
        for key, weight in raw.items():
            text = str(key).strip()
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise InvalidInputError(f"split version '{key}' is not a version number")
            if not math.isfinite(weight) or weight < 0:
                raise InvalidInputError(f"split weight of version {text} must be >= 0")
            weights[int(text)] = float(weight)
        if not weights:
            raise InvalidInputError("a split needs at least one version")
        if len(weights) > MAX_SPLIT_VERSIONS:
            raise InvalidInputError(f"a split takes at most {MAX_SPLIT_VERSIONS} versions")
        total = sum(weights.values())
        if total <= 0:
            raise InvalidInputError("split weights add up to 0")
        if not math.isfinite(total):
            raise InvalidInputError("split weights are too large")
        versions = tuple(v for v, w in weights.items() if w > 0)
        bounds: list[float] = []
        running = 0.0
        for version in versions:
            running += weights[version]
            bounds.append(running / total)
        bounds[-1] = 1.0
        return cls(weights=weights, versions=versions, bounds=tuple(bounds))

    def pick(self, bucket: float) -> int:
        for version, bound in zip(self.versions, self.bounds, strict=True):
            if bucket < bound:
                return version
        return self.versions[-1]

    def as_dict(self) -> dict[str, float]:
        return {str(v): w for v, w in self.weights.items()}


def bucket(model: str, client: str) -> float:
    """A stable position in [0, 1) for (model, client): the same in every process and replica
    (not Python's per-process salted hash), independent between models."""
    data = f"{model}\x00{client}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2.0**64


# ---------------------------------------------------------------------------- shadow
def agree(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def reprepare(primary: LoadedModel, shadow: LoadedModel, row: Any) -> Any:
    """A row prepared for the live version, prepared again for the shadow (by feature name
    when both have names, so a shadow with another column order still gets the right row)."""
    if primary.is_text:
        return shadow.prepare(text=row)
    if primary.feature_names and shadow.feature_names:
        return shadow.prepare(features=dict(zip(primary.feature_names, row, strict=True)))
    return shadow.prepare(features=row)


def forget_split_pick() -> None:
    """This request's runtime was not picked by a split (a task that handles several, such
    as the job runner, must not carry one request's pick into the next)."""
    if _split_pick.get() is not None:
        _split_pick.set(None)


@dataclass(slots=True)
class _Mirrored:
    primary: LoadedModel
    rows: Sequence[Any]
    results: Sequence[Prediction]


class ShadowMirror:
    """Feeds copies of one model's live requests to its shadow version, off the request path.

    Bounded: at most SHADOW_MAX_QUEUE mirrored requests wait; beyond that they are dropped and
    counted. One worker task takes what is queued (up to SHADOW_MAX_BATCH rows) into one call
    of the shadow's batcher, compares labels with the live answers and records the outcome."""

    def __init__(
        self, *, manager: ModelManager, metrics: ServerMetrics, name: str, version: int
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.name = name
        self.version = version
        self.queue: asyncio.Queue[_Mirrored] = asyncio.Queue(maxsize=SHADOW_MAX_QUEUE)
        labels = (name, str(version))
        self._dropped = metrics.shadow_dropped.labels(*labels)
        self._errors = metrics.shadow_errors.labels(*labels)
        self._latency = metrics.shadow_latency.labels(*labels)
        self._outcomes: dict[tuple[int, bool], Counter] = {}
        self._task: asyncio.Task[None] | None = None

    def offer(self, primary: Runtime, rows: Sequence[Any], results: Sequence[Prediction]) -> None:
        try:
            self.queue.put_nowait(_Mirrored(primary.model, rows, results))
        except asyncio.QueueFull:
            self._dropped.inc(len(rows))
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"shadow-{self.name}:{self.version}"
            )

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            rows = len(items[0].rows)
            while rows < SHADOW_MAX_BATCH and not self.queue.empty():
                items.append(self.queue.get_nowait())
                rows += len(items[-1].rows)
            try:
                await self._score(items)
            except Exception:  # a bug here must not stop the mirror, nor reach live traffic
                log.exception("shadow %s:%s failed", self.name, self.version)
                self._errors.inc(rows)

    async def _score(self, items: list[_Mirrored]) -> None:
        try:
            shadow = await self.manager.get(self.name, self.version)
        except MlserveError as exc:
            log.warning("shadow %s:%s is unavailable: %s", self.name, self.version, exc.message)
            self._errors.inc(sum(len(i.rows) for i in items))
            return
        # One submission per mirrored request: the batcher still makes them one model call,
        # and isolates a request the shadow fails on from the others.
        batches: list[list[Any]] = []
        expected: list[list[tuple[int, Prediction]]] = []
        for item in items:
            rows: list[Any] = []
            pairs: list[tuple[int, Prediction]] = []
            for row, result in zip(item.rows, item.results, strict=True):
                try:
                    rows.append(reprepare(item.primary, shadow.model, row))
                except MlserveError:
                    self._errors.inc()  # the shadow does not accept this input
                    continue
                pairs.append((item.primary.version, result))
            if rows:
                batches.append(rows)
                expected.append(pairs)
        if not batches:
            return
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(shadow.batcher.submit_many(rows) for rows in batches), return_exceptions=True
        )
        self._latency.observe(time.perf_counter() - started)
        for pairs, answer in zip(expected, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, MlserveError):
                    raise answer
                self._errors.inc(len(pairs))  # the shadow failed (or is degraded): logged there
                continue
            for (live_version, live), shadow_answer in zip(pairs, answer, strict=True):
                self._outcome(live_version, agree(live.label, shadow_answer.label)).inc()

    def _outcome(self, live_version: int, agreed: bool) -> Counter:
        counter = self._outcomes.get((live_version, agreed))
        if counter is None:
            counter = self.metrics.shadow_predictions.labels(
                self.name, str(live_version), str(self.version), "agree" if agreed else "disagree"
            )
            self._outcomes[(live_version, agreed)] = counter
        return counter

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# ---------------------------------------------------------------------------- controller
class TrafficController:
    """Per-app traffic state: which version serves a request, the prediction cache, and the
    shadow mirrors. Request-path methods cost ~nothing for a feature that is off."""

    def __init__(self, *, settings: Settings, manager: ModelManager, metrics: ServerMetrics):
        self.settings = settings
        self.manager = manager
        self.metrics = metrics
        self.cache: PredictionCache | None = None
        if settings.cache.enabled:
            self.cache = make_prediction_cache(
                settings.cache, on_evict=self._evicted, on_size=metrics.cache_entries.set
            )
        self._evictions: dict[str, Counter] = {}
        self._cache_counters: dict[str, tuple[Counter, Counter]] = {}
        self.splits: dict[str, Split] = {}
        self.shadows: dict[str, int] = {}
        self.sources: dict[str, Source] = {}
        self._mirrors: dict[tuple[str, int], ShadowMirror] = {}
        self._unavailable: dict[tuple[str, int], float] = {}  # -> when to try loading again
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.watcher = RegistryWatcher(manager, interval_s=settings.traffic.watch_interval_s)
        for name, raw in settings.traffic.splits.items():
            try:
                self.splits[name] = Split.parse(raw)
            except InvalidInputError as exc:
                raise ConfigError(f"invalid setting 'traffic.splits.{name}': {exc}") from None
            self.sources[name] = "settings"
        for name, version in settings.traffic.shadow.items():
            if version < 1:
                raise ConfigError(f"invalid setting 'traffic.shadow.{name}': not a version")
            self.shadows[name] = version
            self.sources[name] = "settings"

    # ------------------------------------------------------------------ request path
    async def select(
        self,
        reference: str | None,
        version: int | str | None,
        client: Callable[[], str],
        *,
        kind: InputKind | None = None,
    ) -> Runtime:
        """The runtime for a request: an explicit version or alias wins; a bare model name
        (or the default model for what the request sends, `kind`) with a split goes to the
        version of the client's bucket; else the serving version."""
        if version is None and self.splits:
            name = await self._split_name(reference, kind)
            split = self.splits.get(name) if name is not None else None
            if split is not None and name is not None:
                runtime = await self._split_runtime(name, split.pick(bucket(name, client())))
                if runtime is not None:
                    _split_pick.set(runtime)
                    return runtime
        forget_split_pick()
        return await self.manager.get(reference, version, kind=kind)

    def instead_of(self, runtime: Runtime) -> Runtime | None:
        """The serving version, to answer in place of `runtime` when a split picked `runtime`
        for this request and it then failed fast (degraded): the rule `_split_runtime` applies
        before the call, applied after it. None for a version the request named, or when the
        serving version is `runtime` itself."""
        if _split_pick.get() is not runtime:
            return None
        _split_pick.set(None)
        served = self.manager.models.get(runtime.model.name)
        current = served.current if served is not None else None
        return current if current is not None and current is not runtime else None

    async def _split_name(self, reference: str | None, kind: InputKind | None) -> str | None:
        if reference is None:
            pinned = self.settings.server.default_model
            if pinned and (":" in pinned or "@" in pinned):
                return None  # server.default_model names a version: no split
            return await self.manager.default_for(kind)
        if ":" in reference or "@" in reference:
            return None
        return reference

    async def _split_runtime(self, name: str, version: int) -> Runtime | None:
        """The split's version, or None (the serving version answers) when it cannot be
        loaded or fails fast after consecutive failures."""
        if self._unavailable:
            retry_at = self._unavailable.get((name, version))
            if retry_at is not None:
                if time.monotonic() < retry_at:
                    return None  # not another load attempt (a read and sha256) per request
                del self._unavailable[(name, version)]
        try:
            runtime = await self.manager.get(name, version)
        except MlserveError as exc:
            self._unavailable[(name, version)] = time.monotonic() + SPLIT_RETRY_S
            log.error(
                "split version %s:%s is unavailable (its share goes to the serving version; "
                "retried in %.0f s): %s",
                name,
                version,
                SPLIT_RETRY_S,
                exc.message,
            )
            return None
        breaker = runtime.batcher.breaker
        if runtime.degraded and breaker is not None and breaker.state == "open":
            current = self.manager.served(name).current
            if current is not None and current is not runtime:
                return None
        return runtime

    async def predict(self, runtime: Runtime, row: Any) -> tuple[Prediction, bool | None]:
        """One prepared row: (answer, cache hit?) — hit is None when the cache is off."""
        cache = self.cache
        if cache is None:
            return await runtime.batcher.submit(row), None
        model = runtime.model
        hits, misses = self._counters(model.name)
        cached = await cache.get(model.name, model.version, row)
        if cached is not None:
            hits.inc()
            return cached, True
        misses.inc()
        result = await runtime.batcher.submit(row)
        await cache.set(model.name, model.version, row, result)
        return result, False

    async def predict_many(
        self, runtime: Runtime, rows: Sequence[Any]
    ) -> tuple[list[Prediction], int | None]:
        """Several prepared rows: (answers, rows answered from the cache — None when off).
        The rows the cache misses go to the model together, in one call."""
        cache = self.cache
        if cache is None:
            return await runtime.batcher.submit_many(rows), None
        model = runtime.model
        cached = await cache.get_many(model.name, model.version, rows)
        missing = [i for i, p in enumerate(cached) if p is None]
        hits, misses = self._counters(model.name)
        if len(rows) > len(missing):
            hits.inc(len(rows) - len(missing))
        if not missing:
            return [p for p in cached if p is not None], len(rows)
        misses.inc(len(missing))
        todo = [rows[i] for i in missing]
        computed = await runtime.batcher.submit_many(todo)
        await cache.set_many(model.name, model.version, todo, computed)
        out: list[Any] = cached
        for i, prediction in zip(missing, computed, strict=True):
            out[i] = prediction
        return out, len(rows) - len(missing)

    def _counters(self, name: str) -> tuple[Counter, Counter]:
        counters = self._cache_counters.get(name)
        if counters is None:
            counters = (
                self.metrics.cache_hits.labels(name),
                self.metrics.cache_misses.labels(name),
            )
            self._cache_counters[name] = counters
        return counters

    def _evicted(self, model: str) -> None:
        # Once per miss when the cache is full: labels() would cost more than the lookup.
        counter = self._evictions.get(model)
        if counter is None:
            counter = self._evictions[model] = self.metrics.cache_evictions.labels(model)
        counter.inc()

    def mirror(self, runtime: Runtime, rows: Sequence[Any], results: Sequence[Prediction]) -> None:
        """Copy an answered request to the model's shadow version, if it has one (never
        blocks, never raises into the request)."""
        name = runtime.model.name
        version = self.shadows.get(name)
        if version is None or version == runtime.version:
            return
        mirror = self._mirrors.get((name, version))
        if mirror is None:
            mirror = ShadowMirror(
                manager=self.manager, metrics=self.metrics, name=name, version=version
            )
            self._mirrors[(name, version)] = mirror
        mirror.offer(runtime, rows, results)

    # ------------------------------------------------------------------ configuration
    def describe(self, name: str) -> dict[str, Any]:
        served = self.manager.served(name)
        split = self.splits.get(name)
        return {
            "model": name,
            "split": split.as_dict() if split is not None else None,
            "shadow": self.shadows.get(name),
            "serving_version": served.current.version if served.current else None,
            "source": self.sources.get(name),
        }

    async def configure(
        self, name: str, split: Mapping[str, float] | None, shadow: int | None
    ) -> dict[str, Any]:
        """Replace a model's split and shadow (this process only). Every version named must
        exist and load; nothing changes when one does not."""
        served = self.manager.served(name)
        self._refuse_during_rollout(name)
        parsed = Split.parse(split) if split is not None else None
        versions = set(parsed.versions if parsed is not None else ()) | (
            {shadow} if shadow is not None else set()
        )
        async with self._lock:
            previous_pins = served.pinned
            for version in sorted(versions):
                await asyncio.to_thread(self.manager.registry.metadata, name, version)
            self.manager.pin(name, previous_pins | versions)
            try:
                for version in sorted(versions):
                    await self.manager.get(name, version)  # loaded before traffic arrives
            except BaseException:
                self.manager.pin(name, previous_pins)
                raise
            await self._apply(name, parsed, shadow, "runtime")
        log.info(
            "traffic for %s: split %s, shadow %s",
            name,
            parsed.as_dict() if parsed else None,
            shadow,
        )
        return self.describe(name)

    async def follow_rollout(self, name: str, baseline: int, candidate: int, weight: float) -> None:
        """Split `name` between a rollout's baseline and candidate (`weight` percent to the
        candidate), both loaded before the split changes; the shadow stays as it is."""
        split = Split.parse({str(baseline): 100.0 - weight, str(candidate): weight})
        async with self._lock:
            served = self.manager.served(name)
            self.manager.pin(name, served.pinned | {baseline, candidate})
            for version in (baseline, candidate):
                try:
                    await self.manager.get(name, version)
                except MlserveError as exc:  # its share goes to the serving version
                    log.error("rollout of %s: cannot load version %d: %s", name, version, exc)
            await self._apply(name, split, self.shadows.get(name), "rollout")

    async def end_rollout(self, name: str) -> None:
        """Remove a rollout's split (a manual split or shadow set since is kept)."""
        async with self._lock:
            if self.sources.get(name) == "rollout":
                await self._apply(name, None, self.shadows.get(name), "runtime")

    def _refuse_during_rollout(self, name: str) -> None:
        if self.sources.get(name) == "rollout" and name in self.splits:
            raise RolloutConflictError(
                f"model '{name}' has a rollout running: its split follows the rollout "
                "(abort it first: DELETE /api/models/{name}/rollout)"
            )

    async def clear(self, name: str) -> dict[str, Any]:
        """Remove a model's split and shadow (this process only, settings included)."""
        self.manager.served(name)
        self._refuse_during_rollout(name)
        async with self._lock:
            await self._apply(name, None, None, "runtime")
        log.info("traffic for %s cleared", name)
        return self.describe(name)

    async def _apply(
        self, name: str, split: Split | None, shadow: int | None, source: Source
    ) -> None:
        if split is not None:
            self.splits[name] = split
        else:
            self.splits.pop(name, None)
        old_shadow = self.shadows.get(name)
        if shadow is not None:
            self.shadows[name] = shadow
        else:
            self.shadows.pop(name, None)
        if split is None and shadow is None:
            self.sources.pop(name, None)
        else:
            self.sources[name] = source
        self._unavailable = {k: t for k, t in self._unavailable.items() if k[0] != name}
        if old_shadow is not None and old_shadow != shadow:
            mirror = self._mirrors.pop((name, old_shadow), None)
            if mirror is not None:
                await mirror.close()
        self.manager.pin(
            name, set(split.versions if split else ()) | ({shadow} if shadow else set())
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self, loaded: Awaitable[None]) -> None:
        """Once `loaded` (the model loading) is done: pin and preload the versions settings
        name for splits and shadows, then watch the registry for alias changes."""

        async def run() -> None:
            try:
                await loaded
            except Exception:
                # The traffic settings are still applied to whatever did load.
                pending = [
                    str(served.ref)
                    for served in self.manager.models.values()
                    if served.status != "loaded"
                ]
                log.warning(
                    "background model loading failed (not loaded: %s)",
                    ", ".join(pending) or "none",
                    exc_info=True,
                )
            await self._preload_configured()
            await self.watcher.run()

        self._task = asyncio.get_running_loop().create_task(run(), name="traffic")

    async def _preload_configured(self) -> None:
        for name in sorted(set(self.splits) | set(self.shadows)):
            if name not in self.manager.models:
                log.warning(
                    "traffic settings name model '%s', which this server does not serve", name
                )
                continue
            split = self.splits.get(name)
            shadow = self.shadows.get(name)
            versions = set(split.versions if split else ()) | ({shadow} if shadow else set())
            self.manager.pin(name, versions)
            for version in sorted(versions):
                try:
                    await self.manager.get(name, version)
                except MlserveError as exc:
                    log.error(
                        "cannot load %s:%s (traffic settings): %s", name, version, exc.message
                    )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(m.close() for m in self._mirrors.values()))
        self._mirrors.clear()
