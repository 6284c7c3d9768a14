"""The models a server process serves: loading, version lookup, atomic reload swaps."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mlserve.config import Settings
from mlserve.errors import (
    InvalidInputError,
    MlserveError,
    ModelNotFoundError,
    ModelUnavailableError,
    redact_paths,
)
from mlserve.registry import ModelRef, Registry
from mlserve.runtime.batcher import Batcher, BatchingConfig
from mlserve.runtime.breaker import BreakerConfig, CircuitBreaker
from mlserve.runtime.heap import HeapTrim, malloc_trim
from mlserve.runtime.model import LoadedModel, Prediction
from mlserve.schemas import ModelMetadata
from mlserve.serving.budget import (
    EVICT_GRACE_S,
    RUNTIME_OVERHEAD_BYTES,
    ModelBudget,
    estimate_bytes,
)
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.retire import Retirements
from mlserve.serving.runtimes import KIND_FIELDS as KIND_FIELDS
from mlserve.serving.runtimes import InputKind as InputKind
from mlserve.serving.runtimes import Runtime as Runtime
from mlserve.serving.runtimes import ServedModel as ServedModel
from mlserve.serving.runtimes import ServedStatus as ServedStatus
from mlserve.serving.runtimes import default_choice as default_choice
from mlserve.serving.runtimes import loaded_runtimes

log = logging.getLogger(__name__)

MAX_EXTRA_VERSIONS = 3  # versions a request names explicitly, kept loaded per model (LRU)
# A retired runtime (swapped out, evicted, unloaded) keeps accepting work while a request
# holds it, at most this long, before it drains and stops: a request that picked it just before
# the swap, then awaited something (a shared cache lookup), still gets its answer from it
# instead of a "shutting down" 503. Nobody holding it, it stops at once (retire.py).
RETIRE_GRACE_S = 2.0
ALIAS_REFRESH_S = 1.0  # an unknown alias re-reads the registry at most this often per model


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    name: str
    changed: bool
    previous_version: int | None
    version: int


class ModelManager:
    """Owns every Runtime of one app; routes ask it for the runtime a request should use."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: ServerMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        trim: HeapTrim | None = None,
    ) -> None:
        """`trim` gives the heap memory unloaded models freed back to the OS (None: glibc's
        malloc_trim, where the C library is glibc)."""
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.clock = clock  # circuit breakers and alias refreshes (tests move it by hand)
        self.breaker_config = BreakerConfig(
            failure_threshold=settings.traffic.failure_threshold,
            cooldown_s=settings.traffic.failure_cooldown_s,
        )
        self.batching = BatchingConfig(
            enabled=settings.batching.enabled,
            max_batch_size=settings.batching.max_batch_size,
            max_wait_ms=settings.batching.max_wait_ms,
            max_queue=settings.batching.max_queue,
            max_queue_delay_ms=settings.batching.max_queue_delay_ms,
        )
        self.models: dict[str, ServedModel] = {}
        self.budget = ModelBudget(settings)  # server.max_loaded / memory_budget_mb
        self._ticks = itertools.count(1)  # Runtime.last_used: a counter, not a clock
        self._pending_loads: dict[tuple[str, int], asyncio.Task[Runtime]] = {}
        self.loading_done = False
        self.retirements = Retirements(metrics, trim=trim or malloc_trim())

    # ------------------------------------------------------------------ configuration
    def configured_refs(self) -> list[ModelRef]:
        """settings.server.models, or every model in the registry."""
        if self.settings.server.models:
            return [ModelRef.parse(r) for r in self.settings.server.models]
        return [ModelRef(name=n) for n in self.registry.names()]

    @property
    def default_name(self) -> str | None:
        """The model of every request naming none: server.default_model, else the only served
        model; None when it depends on what the request sends (default_for)."""
        if self.settings.server.default_model:
            return ModelRef.parse(self.settings.server.default_model).name
        if len(self.models) == 1:
            return next(iter(self.models))
        return None

    async def default_for(self, kind: InputKind | None) -> str:
        """The model a request sending `kind` (text or features) goes to when it names none:
        default_name, else the only served model taking `kind`. Several or none taking it:
        422 naming the candidates and how to choose; nothing served: 503."""
        name = self.default_name
        if name is not None:
            return name
        if not self.models:
            raise ModelUnavailableError(
                "no models are served: register one (mlserve train or mlserve register); "
                "a model registered after startup is served after POST /api/models/NAME/reload"
            )
        for served in list(self.models.values()):
            if served.kind is None:  # not loaded yet: ask the registry, do not guess
                await self._read_kind(served)
        kinds = {name: served.kind for name, served in self.models.items()}
        choice = default_choice(kinds, kind)
        if isinstance(choice, str):
            return choice
        names = ", ".join(choice)
        if kind is None:
            why = f"this server serves several models ({names})"
        elif kinds.get(choice[0]) == kind:
            why = f"{len(choice)} served models take {KIND_FIELDS[kind]} ({names})"
        else:
            why = f"no served model takes {KIND_FIELDS[kind]} (serving: {names})"
        raise InvalidInputError(
            f"'model' is required: {why}; name one in 'model' (--model in the CLI) "
            "or set server.default_model"
        )

    async def _read_kind(self, served: ServedModel) -> None:
        """What a model not loaded yet takes, from the registry metadata of the version its
        reference resolves to (re-read at most once per ALIAS_REFRESH_S while unreadable)."""
        now = self.clock()
        if now - served.kind_read_at < ALIAS_REFRESH_S:
            return
        served.kind_read_at = now
        try:
            meta = await asyncio.to_thread(self._resolve, served.ref)
        except MlserveError as exc:
            log.warning("cannot read what %s takes: %s", served.ref, exc.message)
            return
        served.kind = meta.input_schema.kind

    def unserved_names(self) -> list[str]:
        """Registry models registered after startup, not served yet: served once reloaded
        when the server serves the whole registry (server.models unset); else none."""
        if self.settings.server.models:
            return []
        return [name for name in self.registry.names() if name not in self.models]

    def _resolve(self, ref: ModelRef) -> ModelMetadata:
        return self.registry.resolve(ref, default_alias=self.settings.server.default_alias)

    # ------------------------------------------------------------------ loading
    def _load_blocking(self, meta: ModelMetadata) -> tuple[LoadedModel, list[str], int]:
        """The loaded model, the registry's warnings, and its estimated memory."""
        started = time.perf_counter()
        artifact = self.registry.load(meta)
        model = LoadedModel(
            artifact.estimator, meta, max_text_length=self.settings.server.max_text_length
        )
        estimated = estimate_bytes(model)
        self.metrics.model_load_seconds.labels(meta.name).observe(time.perf_counter() - started)
        return model, artifact.warnings, estimated

    async def _load_runtime(self, meta: ModelMetadata) -> Runtime:
        # Room is made before loading, for the artifact's size (all that is known yet), and
        # again once the loaded runtime is in place, for its measured estimate (_make_room).
        reserved = meta.size_bytes + RUNTIME_OVERHEAD_BYTES
        budget = self.budget
        budget.loading += 1
        budget.loading_bytes += reserved
        try:
            self._make_room()
            model, notes, estimated = await asyncio.to_thread(self._load_blocking, meta)
        finally:
            budget.loading -= 1
            budget.loading_bytes -= reserved
        labels = (meta.name, str(meta.version))
        batch_hist = self.metrics.batch_size.labels(*labels)
        latency_hist = self.metrics.prediction_latency.labels(*labels)

        def observe(rows: int, seconds: float) -> None:
            batch_hist.observe(rows)
            latency_hist.observe(seconds)

        degraded = self.metrics.model_degraded.labels(*labels)
        degraded.set(0)
        breaker = CircuitBreaker(
            model.ref,
            config=self.breaker_config,
            clock=lambda: self.clock(),  # looked up per call: tests swap the manager's clock
            on_change=lambda tripped: degraded.set(1 if tripped else 0),
        )
        queue_gauge = self.metrics.queue_depth.labels(*labels)
        queue_gauge.set(0)
        # Set on every change, not read by a callback: the multiprocess collector (--workers)
        # only sees values written to its files.
        batcher: Batcher[Prediction] = Batcher(
            model.predict,
            config=self.batching,
            name=model.ref,
            on_batch=observe,
            on_queue=queue_gauge.set,
            breaker=breaker,
        )
        batcher.start()
        self.metrics.models_loaded.inc()
        self.metrics.model_loads.labels(meta.name).inc()
        self.metrics.models_estimated_bytes.inc(estimated)
        log.info("loaded %s (sha256 %s)", model.ref, meta.sha256[:12])
        return Runtime(
            model=model,
            batcher=batcher,
            loaded_at=datetime.now(UTC),
            warnings=notes,
            estimated_bytes=estimated,
            last_used=next(self._ticks),
        )

    async def load_all(self) -> None:
        """Load what every configured reference points at; failures are kept per model."""
        try:
            refs = self.configured_refs()
        except MlserveError as exc:
            log.error("cannot list models to serve: %s", exc.message)
            refs = []
        for ref in refs:
            self.models.setdefault(ref.name, ServedModel(name=ref.name, ref=ref))
        for served in list(self.models.values()):
            if self.budget.limited and served.name not in self.budget.protected:
                # Loaded by its first request (and unloaded again when it makes room).
                served.status, served.on_demand = "unloaded", True
                continue
            await self._load_current(served)
        self.loading_done = True
        loaded = [s.name for s in self.models.values() if s.status == "loaded" or s.on_demand]
        if not self.models:
            log.warning("no models to serve in registry %s", self.registry.root)
        elif not loaded:
            log.error("no model could be loaded; the server is not ready")

    async def _load_current(self, served: ServedModel) -> None:
        try:
            meta = await asyncio.to_thread(self._resolve, served.ref)
            served.kind = meta.input_schema.kind
            served.aliases = await asyncio.to_thread(self.registry.aliases, served.name)
            # A version loaded for requests naming it becomes the serving one (no second copy).
            runtime = served.extra.pop(meta.version, None) or await self._load_runtime(meta)
            served.current = runtime
            served.status = "loaded"
            served.error = None
            self._make_room(keep=runtime)
        except MlserveError as exc:
            served.status = "failed"
            # Shown to clients (/api/models, /api/health, 503s): the log keeps the file paths.
            served.error = redact_paths(exc.message, self.registry.root, self.settings.home)
            log.error("cannot load %s: %s", served.ref, exc.message)
        except Exception:
            # A bug, not a bad model: still only this model fails, and the others serve.
            served.status = "failed"
            served.error = "internal error while loading (see the server log)"
            log.exception("cannot load %s", served.ref)

    # ------------------------------------------------------------------ lookup
    def saturated(self, name: str | None = None, *, batch: bool = False, ahead: int = 0) -> bool:
        """Whether every loaded version (of `name`, or of every model) would refuse a
        one-row request (batching.max_queue or max_queue_delay_ms): then any prediction
        request would be shed, so it can be answered 503 before its body is even read.
        With `batch`, a request of the fewest rows recently submitted to that version
        (Batcher.recent_rows) instead of one; `ahead` requests let in but not yet queued
        count as queued. False when nothing is loaded."""
        if name is None:
            candidates = list(self.models.values())
        else:
            one = self.models.get(name)
            if one is None:
                return False
            candidates = [one]
        found = False
        for served in candidates:
            runtimes = list(served.extra.values())
            if served.current is not None:
                runtimes.append(served.current)
            for runtime in runtimes:
                batcher = runtime.batcher
                if batcher.would_admit(batcher.recent_rows if batch else 1, ahead=ahead):
                    return False
                found = True
        return found

    def served(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise self._not_served(name)
        return served

    def _not_served(self, name: str) -> ModelNotFoundError:
        serving = ", ".join(sorted(self.models)) or "none"
        if self.settings.server.models:
            return ModelNotFoundError(
                f"model '{name}' is not served here: this server serves only the models of "
                f"server.models ({serving})"
            )
        return ModelNotFoundError(
            f"model '{name}' is not served here (serving: {serving}; a model registered after "
            "startup is served after POST /api/models/NAME/reload)"
        )

    async def get(
        self,
        reference: str | None,
        version: int | str | None = None,
        *,
        kind: InputKind | None = None,
    ) -> Runtime:
        """The runtime for a request's `model` (and compatible `model_version`) fields; `kind`
        (what the request sends) picks the model of a request naming none (default_for)."""
        if reference is None:
            name = await self.default_for(kind)
            # server.default_model may pin a version or an alias (iris:2, iris@staging); a
            # request's own model_version still wins over that pin.
            default = self.settings.server.default_model
            ref = ModelRef.parse(default) if default and version is None else ModelRef(name=name)
        else:
            ref = ModelRef.parse(reference)
        if version is not None and ref.version is None and ref.alias is None:
            text = str(version).strip()
            ref = (
                ModelRef.parse(f"{ref.name}:{text}")
                if text.isdigit()
                else ModelRef.parse(f"{ref.name}@{text}")
            )
        served = self.served(ref.name)
        current = served.current
        if ref.version is None and ref.alias is None:
            if current is None:
                if not served.on_demand:
                    raise ModelUnavailableError(
                        f"model '{served.name}' is not loaded"
                        + (f": {served.error}" if served.error else " yet"),
                        retry_after=5,
                    )
                current = await self._load_on_demand(served)
            current.last_used = next(self._ticks)
            return current
        wanted = ref.version
        if wanted is None:
            assert ref.alias is not None  # noqa: S101 - parse guarantees one of the two
            wanted = served.aliases.get(ref.alias)
            if wanted is None:
                wanted = await self._refresh_alias(served, ref.alias)
            if wanted is None:
                raise ModelNotFoundError(f"model '{served.name}' has no alias '{ref.alias}'")
        if current is not None and current.version == wanted:
            current.last_used = next(self._ticks)
            return current
        runtime = await self._extra_version(served, wanted)
        runtime.last_used = next(self._ticks)
        return runtime

    async def _load_on_demand(self, served: ServedModel) -> Runtime:
        """Load a model not loaded because of server.max_loaded / memory_budget_mb (a cold
        start: concurrent requests wait for the one load). A failed load marks it failed, as
        at startup; a reload (or a registry change) tries again."""
        started = time.perf_counter()
        async with served.lock:
            if served.current is None and served.on_demand:
                served.status = "loading"
                await self._load_current(served)
                if served.current is None:
                    served.on_demand = False
                else:
                    self.metrics.cold_start_seconds.observe(time.perf_counter() - started)
        current = served.current
        if current is None:
            raise ModelUnavailableError(
                f"model '{served.name}' is not loaded"
                + (f": {served.error}" if served.error else " yet"),
                retry_after=5,
            )
        return current

    async def _refresh_alias(self, served: ServedModel, alias: str) -> int | None:
        """An alias created after the model loaded: re-read the model's aliases (at most
        once per ALIAS_REFRESH_S, so unknown aliases cannot hammer the registry)."""
        now = self.clock()
        if now - served.aliases_read_at < ALIAS_REFRESH_S:
            return None
        served.aliases_read_at = now
        try:
            served.aliases = await asyncio.to_thread(self.registry.aliases, served.name)
        except MlserveError as exc:
            log.warning("cannot re-read the aliases of %s: %s", served.name, exc.message)
            return None
        return served.aliases.get(alias)

    async def _load_version(self, meta: ModelMetadata) -> Runtime:
        """Load one version once, however many callers ask for it at the same time."""
        key = (meta.name, meta.version)
        task = self._pending_loads.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_runtime(meta))
            self._pending_loads[key] = task
            task.add_done_callback(lambda _t: self._pending_loads.pop(key, None))
        return await asyncio.shield(task)

    async def _extra_version(self, served: ServedModel, version: int) -> Runtime:
        runtime = served.extra.get(version)
        if runtime is not None:
            served.extra.move_to_end(version)
            return runtime
        if (served.name, version) in self._pending_loads:
            runtime = await asyncio.shield(self._pending_loads[(served.name, version)])
        else:
            meta = await asyncio.to_thread(self.registry.metadata, served.name, version)
            runtime = await self._load_version(meta)
        current = served.current
        if current is not None and current.version == version:
            if current is not runtime:  # a reload made it current meanwhile
                self._retire(runtime)
            return current
        if version not in served.extra:
            served.extra[version] = runtime
            self._evict_extra(served)
            self._make_room(keep=runtime)
        elif served.extra[version] is not runtime:
            self._retire(runtime)
        return served.extra[version]

    def _evict_extra(self, served: ServedModel) -> None:
        """Keep at most MAX_EXTRA_VERSIONS unpinned extra versions (least recently used go)."""
        unpinned = [v for v in served.extra if v not in served.pinned]
        while len(unpinned) > MAX_EXTRA_VERSIONS:
            self._retire(served.extra.pop(unpinned.pop(0)))

    def pin(self, name: str, versions: Iterable[int]) -> None:
        """Keep these versions of `name` loaded once loaded (split and shadow versions)."""
        served = self.served(name)
        served.pinned = frozenset(versions)
        self._evict_extra(served)

    # ------------------------------------------------------------------ reload
    async def reload(self, name: str) -> ReloadOutcome:
        """Re-read the registry and swap in what the reference now points at.

        Requests in flight finish on the old version; if loading fails, the old one keeps
        serving and the error propagates to the caller. A name not served yet but registered
        since startup is added, when the server serves the whole registry (unserved_names).
        """
        served = self.models.get(name)
        if served is None:
            if self.settings.server.models:  # a fixed list: only the V2 repository API adds
                raise self._not_served(name)
            runtime = await self.load(name)  # 404 if not registered
            return ReloadOutcome(name, True, None, runtime.version)
        async with served.lock:
            meta = await asyncio.to_thread(self._resolve, served.ref)
            aliases = await asyncio.to_thread(self.registry.aliases, name)
            old = served.current
            previous = old.version if old is not None else None
            if old is not None and old.version == meta.version:
                served.aliases = aliases
                served.kind = meta.input_schema.kind
                return ReloadOutcome(name, False, previous, meta.version)
            # Loaded in the background while the old version keeps serving; then one
            # assignment swaps them (requests already holding the old runtime finish on it).
            runtime = served.extra.get(meta.version) or await self._load_version(meta)
            served.extra.pop(meta.version, None)
            served.current = runtime
            served.kind = meta.input_schema.kind
            served.aliases = aliases
            served.status = "loaded"
            served.error = None
            if old is not None:
                if old.version in served.pinned:
                    served.extra[old.version] = old  # still part of a split or the shadow
                    self._evict_extra(served)
                else:
                    self._retire(old)
            self._make_room(keep=runtime)
            self.metrics.model_swaps.labels(name).inc()
            log.info("now serving %s (was %s)", runtime.model.ref, previous)
            return ReloadOutcome(name, True, previous, meta.version)

    async def _add(self, name: str) -> ServedModel:
        """Serve a registry model not served so far (404 if the registry does not hold it)."""
        ref = ModelRef.parse(name)
        if ref.version is not None or ref.alias is not None:
            raise InvalidInputError(f"load takes a model name, not a reference ('{name}')")
        await asyncio.to_thread(self.registry.versions, ref.name)  # 404 if not registered
        served = self.models.get(ref.name)
        if served is None:  # (not added meanwhile by a concurrent call)
            served = self.models[ref.name] = ServedModel(name=ref.name, ref=ref)
            log.info("serving %s, not served so far", ref.name)
        return served

    # ------------------------------------------------------------------ memory budget
    def _make_room(self, keep: Runtime | None = None) -> None:
        """Unload what the budget says no longer fits (least recently used idle first)."""
        for served, runtime in self.budget.victims(self.models.values(), keep):
            self._evict(served, runtime)

    def _evict(self, served: ServedModel, runtime: Runtime) -> None:
        """Unload one runtime to make room; its model loads again on its next request."""
        if served.current is runtime:
            served.current = None
            served.status = "unloaded"
            served.error = None
            served.on_demand = True
        else:
            served.extra.pop(runtime.version, None)
        self._retire(runtime, grace_s=EVICT_GRACE_S)
        self.metrics.model_evictions.labels(served.name).inc()
        log.info(
            "unloaded %s to make room (least recently used idle model, ~%.1f MB)",
            runtime.model.ref,
            runtime.estimated_bytes / 2**20,
        )

    def _retire(self, runtime: Runtime, *, grace_s: float = RETIRE_GRACE_S) -> None:
        """Stop a runtime once its queued requests are answered (in the background): as soon
        as no request holds it, at the latest after a grace period in which late requests
        that already picked it are still accepted; then trim the heap (retire.py)."""
        self.retirements.retire(runtime, grace_s)

    # ------------------------------------------------------------------ lifecycle
    def runtimes(self) -> list[Runtime]:
        return [runtime for served in self.models.values() for runtime in loaded_runtimes(served)]

    async def close(self) -> None:
        timeout = self.settings.server.graceful_timeout
        await asyncio.gather(
            *(rt.batcher.stop(drain=True, timeout=timeout) for rt in self.runtimes()),
            self.retirements.close(),  # retiring runtimes stop now, without their grace period
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ repository (V2 load/unload)
    async def load(self, name: str) -> Runtime:
        """Serve `name` from the registry: load it if it is not loaded (also a registry model
        not served so far), or reload it (picking up a moved alias) if it is."""
        served = self.models.get(name) or await self._add(name)
        if served.current is not None:
            await self.reload(served.name)
        else:
            async with served.lock:
                if served.current is None:
                    served.status = "loading"
                    await self._load_current(served)
        if served.current is None:
            raise ModelUnavailableError(f"cannot load model '{served.name}': {served.error}")
        return served.current

    async def unload(self, name: str) -> list[int]:
        """Stop serving `name` (every loaded version; queued requests still get answers).
        It stays listed, unavailable (503), until loaded again. Returns the versions stopped."""
        served = self.served(name)
        async with served.lock:
            runtimes = [served.current] if served.current is not None else []
            runtimes.extend(served.extra.values())
            served.current = None
            served.extra.clear()
            served.status = "unloaded"
            served.on_demand = False  # unloaded on purpose: 503 until loaded again
            served.error = "unloaded through the model repository API"
            for runtime in runtimes:
                self._retire(runtime)
        if runtimes:
            log.info("unloaded %s (versions %s)", name, ", ".join(str(r.version) for r in runtimes))
        return [r.version for r in runtimes]
