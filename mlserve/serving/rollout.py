"""Canary rollouts: move a growing share of a model's traffic to a candidate version, judge it
against the baseline at every step, then promote it (move the alias) or roll it back.

The rollout lives in the rollout store (SQLite on one host, Redis with redis.url), so every
replica follows it: each round (`traffic.rollout_interval_s`) every replica applies the stored
step as its A/B split and adds what it answered to the step's shared counts; the one replica
holding the model's lease (in the store) judges the guards (serving/guards.py) and writes the
next state with a compare-and-set, so a step is never moved twice and a replica that dies is
replaced by the next lease holder, which resumes from the stored state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlserve.config import Settings
from mlserve.errors import MlserveError, NotFoundError
from mlserve.rollouts.base import (
    Guards,
    RolloutConflictError,
    RolloutEvent,
    RolloutNotFoundError,
    RolloutPlan,
    RolloutState,
    RolloutStore,
    RolloutsUnavailableError,
    WindowCounts,
    new_rollout_id,
)
from mlserve.serving.guards import Accuracy, judge
from mlserve.serving.manager import ModelManager, Runtime
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.traffic import TrafficController

if TYPE_CHECKING:
    from mlserve.schemas.rollouts import RolloutRequest
    from mlserve.serving.quality import QualityService

__all__ = ["LEASE_ROUNDS", "RolloutController"]

log = logging.getLogger(__name__)

LEASE_ROUNDS = 5  # a lease outlives this many missed rounds before another replica takes over
UPDATE_ATTEMPTS = 5  # compare-and-set retries of an admin change racing the driver


@dataclass(slots=True)
class _Watch:
    """What this replica counts for one model's running rollout (its current step)."""

    rollout_id: str
    step: int
    versions: frozenset[int]
    counts: dict[int, WindowCounts] = field(default_factory=dict)


class RolloutController:
    """One per app: the request-path counters, the per-round follow/drive loop, and the
    start/status/abort operations behind /api/models/{name}/rollout."""

    def __init__(
        self,
        *,
        settings: Settings,
        manager: ModelManager,
        traffic: TrafficController,
        metrics: ServerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.traffic = traffic
        self.metrics = metrics
        self.clock = clock
        self.interval_s = settings.traffic.rollout_interval_s
        self.lease_s = self.interval_s * LEASE_ROUNDS
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.store: RolloutStore | None = None  # opened in the lifespan
        self.quality: QualityService | None = None
        self.error: str | None = None  # why the store is not there
        # Request path: model name -> counts of its running rollout (empty: nothing to do).
        self.watching: dict[str, _Watch] = {}
        self._following: dict[str, RolloutState] = {}  # running rollouts applied here
        self._task: asyncio.Task[None] | None = None
        self._unavailable_logged = False

    # ------------------------------------------------------------------ request path
    def observe(self, runtime: Runtime, seconds: float, *, failed: bool, n: int = 1) -> None:
        """Count `n` predictions of runtime's version (failed: a 5xx) in its rollout step."""
        watch = self.watching.get(runtime.model.name)
        if watch is None or runtime.version not in watch.versions:
            return
        counts = watch.counts.get(runtime.version)
        if counts is None:
            counts = watch.counts[runtime.version] = WindowCounts()
        counts.observe(seconds, failed=failed, n=n)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, store: RolloutStore | None, error: str | None = None) -> None:
        self.store = store
        self.error = error
        if store is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="rollouts")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.store is not None:
            with contextlib.suppress(MlserveError, OSError):
                await self._flush()
                for name in list(self._following):
                    await self.store.release(name, self.holder)
            await self.store.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
                if self._unavailable_logged:
                    log.info("the rollout store answers again")
                    self._unavailable_logged = False
            except RolloutsUnavailableError as exc:
                if not self._unavailable_logged:
                    log.error("rollouts are on hold: %s", exc.message)
                    self._unavailable_logged = True
            except Exception:  # a bug in one round must not stop the rollouts for good
                log.exception("rollout round failed")
            await asyncio.sleep(self.interval_s)

    def _require_store(self) -> RolloutStore:
        if self.store is None:
            raise RolloutsUnavailableError(self.error or "the rollout store is not open yet")
        return self.store

    # ------------------------------------------------------------------ one round
    async def round(self) -> None:
        """Report this replica's counts, follow every running rollout, drive the ones whose
        lease this replica holds."""
        store = self._require_store()
        await self._flush()
        running = {state.plan.model: state for state in await store.running()}
        for name in [n for n in self._following if n not in running]:
            await self._settle(name, await store.get(name))
        for name, state in running.items():
            if name not in self.manager.models:
                continue  # a model this replica does not serve
            await self._follow(state)
            if await store.acquire(name, self.holder, self.lease_s):
                await self._drive(state)

    async def _flush(self) -> None:
        items = []
        for watch in self.watching.values():
            for version, counts in watch.counts.items():
                if not counts.empty:
                    items.append((watch.rollout_id, watch.step, version, counts))
            watch.counts = {}
        if items and self.store is not None:
            await self.store.add_windows(items)

    async def _follow(self, state: RolloutState) -> None:
        """Apply the stored step here: the split, the counts of this step."""
        name, plan = state.plan.model, state.plan
        known = self._following.get(name)
        self._following[name] = state
        if known is None or known.id != state.id or known.step != state.step:
            await self.traffic.follow_rollout(name, plan.baseline, plan.candidate, state.weight)
            self.watching[name] = _Watch(
                rollout_id=state.id,
                step=state.step,
                versions=frozenset((plan.baseline, plan.candidate)),
            )
        self.metrics.rollout_step.labels(name).set(state.step + 1)
        self.metrics.rollout_weight.labels(name).set(state.weight / 100)  # a percent: 0 to 1

    async def _settle(self, name: str, state: RolloutState | None) -> None:
        """A rollout followed here has ended: serve the promoted version (the alias moved),
        then remove the split."""
        self._following.pop(name, None)
        self.watching.pop(name, None)
        if state is not None and state.status == "promoted" and name in self.manager.models:
            with contextlib.suppress(MlserveError):  # logged by reload; the watcher retries
                await self.manager.reload(name)
        await self.traffic.end_rollout(name)
        self.metrics.rollout_step.labels(name).set(0)
        self.metrics.rollout_weight.labels(name).set(0)
        if self.store is not None:
            await self.store.release(name, self.holder)

    async def _drive(self, state: RolloutState) -> None:
        """Judge the current step; write what follows (rollback, next step, promotion)."""
        store = self._require_store()
        plan = state.plan
        try:  # loaded already (pinned), unless this replica cannot load it at all
            await self.manager.get(plan.model, plan.candidate)
        except MlserveError as exc:
            reason = (
                f"rolled back at step {state.step + 1} ({state.weight:g} %): version "
                f"{plan.candidate} cannot be loaded: {exc.message}"
            )
            await self._end(state, "rolled_back", reason, state.figures)
            return
        now = self.clock()
        windows = await store.windows(state.id, state.step)
        accuracy = await self._accuracy(state, now) if plan.min_labels > 0 else None
        verdict = judge(plan, windows, accuracy)
        if verdict.breach is not None:
            reason = f"rolled back at step {state.step + 1} ({state.weight:g} %): {verdict.breach}"
            await self._end(state, "rolled_back", reason, verdict.figures)
            return
        elapsed = now - state.step_started_at
        if not verdict.ready or elapsed < plan.step_seconds:
            if verdict.figures != state.figures:
                written = await store.replace(
                    replace(state, figures=verdict.figures), expected_revision=state.revision
                )
                if written is not None:
                    self._following[plan.model] = written
            return
        if state.step + 1 < len(plan.steps):
            nxt = state.step + 1
            event = RolloutEvent(
                at=now,
                event="step",
                step=nxt,
                weight=plan.steps[nxt],
                detail=f"step {state.step + 1} passed its guards",
            )
            written = await store.replace(
                state.with_event(event, step=nxt, step_started_at=now, figures={}),
                expected_revision=state.revision,
            )
            if written is not None:
                self.metrics.rollout_events.labels(plan.model, "step").inc()
                log.info(
                    "rollout of %s:%d: step %d, %g %% of traffic",
                    plan.model,
                    plan.candidate,
                    nxt + 1,
                    plan.steps[nxt],
                )
                await self._follow(written)
            return
        # The last step passed: the alias moves first (a replica dying right after is
        # replaced by one that moves it again, idempotently, then records the promotion).
        await asyncio.to_thread(
            self.manager.registry.set_alias, plan.model, plan.alias, plan.candidate
        )
        await self._end(state, "promoted", None, verdict.figures)

    async def _end(
        self, state: RolloutState, status: Any, reason: str | None, figures: dict[str, Any]
    ) -> RolloutState | None:
        store = self._require_store()
        plan = state.plan
        now = self.clock()
        event = RolloutEvent(
            at=now, event=status, step=state.step, weight=state.weight, detail=reason or ""
        )
        written = await store.replace(
            state.with_event(event, status=status, ended_at=now, reason=reason, figures=figures),
            expected_revision=state.revision,
        )
        if written is None:
            return None  # another writer came first; the next round follows what it wrote
        self.metrics.rollout_events.labels(plan.model, status).inc()
        if status == "promoted":
            log.info(
                "rollout of %s:%d promoted: %s@%s now names version %d",
                plan.model,
                plan.candidate,
                plan.model,
                plan.alias,
                plan.candidate,
            )
        else:
            log.warning("rollout of %s:%d %s: %s", plan.model, plan.candidate, status, reason)
        await self._settle(plan.model, written)
        return written

    async def _accuracy(self, state: RolloutState, now: float) -> dict[int, Accuracy] | None:
        """Each version's labelled predictions made since the rollout started."""
        quality = self.quality
        if quality is None or quality.store is None:
            return None
        plan = state.plan
        await quality.recorder.flush()
        out = {}
        for version in (plan.baseline, plan.candidate):
            data = await quality.store.version_data(
                plan.model,
                version,
                rolling=0,
                windows={"rollout": max(now - state.started_at, 0.0) + 1.0},
                drift_window_s=0.0,
            )
            pairs = data.windows.get("rollout", {})
            out[version] = Accuracy(
                correct=sum(n for (true, predicted), n in pairs.items() if true == predicted),
                labelled=sum(pairs.values()),
            )
        return out

    # ------------------------------------------------------------------ admin operations
    async def begin(self, name: str, request: RolloutRequest) -> RolloutState:
        """Start a rollout of `name` (the routes' PUT): checks, loads both versions, stores
        it, applies its first step here at once."""
        store = self._require_store()
        self.manager.served(name)  # 404 unless served here
        alias = request.alias or self.settings.server.default_alias
        registry = self.manager.registry
        aliases = await asyncio.to_thread(registry.aliases, name)
        baseline = aliases.get(alias)
        if baseline is None:
            raise NotFoundError(
                f"model '{name}' has no alias '{alias}': the rollout judges the candidate "
                f"against the version that alias names (set it with mlserve models alias)"
            )
        if request.candidate == baseline:
            raise RolloutConflictError(
                f"version {baseline} is already what {name}@{alias} names; nothing to roll out"
            )
        await asyncio.to_thread(registry.metadata, name, request.candidate)  # 404 if absent
        source = self.traffic.sources.get(name)
        if name in self.traffic.splits and source != "rollout":
            raise RolloutConflictError(
                f"model '{name}' has an A/B split ({source}); clear it before a rollout"
            )
        current = await store.get(name)
        if current is not None and current.active:
            raise RolloutConflictError(
                f"model '{name}' has a rollout running (candidate {current.plan.candidate}); "
                "abort it first"
            )
        for version in (baseline, request.candidate):
            await self.manager.get(name, version)  # loads now: a version that cannot is refused
        now = self.clock()
        guards = request.guards
        plan = RolloutPlan(
            model=name,
            alias=alias,
            baseline=baseline,
            candidate=request.candidate,
            steps=tuple(float(s) for s in request.steps),
            step_seconds=request.step_seconds,
            min_requests=request.min_requests,
            min_labels=request.min_labels,
            guards=Guards(
                max_error_rate=guards.max_error_rate,
                max_p99_ms=guards.max_p99_ms,
                max_accuracy_drop=guards.max_accuracy_drop,
            ),
        )
        event = RolloutEvent(at=now, event="started", step=0, weight=plan.steps[0])
        state = await store.create(
            RolloutState(
                id=new_rollout_id(),
                plan=plan,
                status="running",
                step=0,
                started_at=now,
                step_started_at=now,
                events=(event,),
            )
        )
        self.metrics.rollout_events.labels(name, "started").inc()
        log.info(
            "rollout of %s:%d started against version %d: steps %s %%",
            name,
            plan.candidate,
            baseline,
            ", ".join(f"{s:g}" for s in plan.steps),
        )
        await self._follow(state)
        return state

    async def status(self, name: str) -> RolloutState:
        state = await self._require_store().get(name)
        if state is None:
            raise RolloutNotFoundError(f"model '{name}' has no rollout")
        return state

    async def abort(self, name: str, reason: str = "aborted by an admin") -> RolloutState:
        """Stop a running rollout: the baseline takes all traffic again, the alias stays."""
        for _ in range(UPDATE_ATTEMPTS):
            state = await self.status(name)
            if not state.active:
                raise RolloutConflictError(
                    f"the rollout of '{name}' already ended ({state.status.replace('_', ' ')})"
                )
            written = await self._end(state, "aborted", reason, state.figures)
            if written is not None:
                return written
        raise RolloutConflictError(f"the rollout of '{name}' keeps changing; try again")

    def describe(self, state: RolloutState) -> dict[str, Any]:
        """The wire form (schemas.RolloutInfo) of a stored rollout."""
        plan = state.plan
        next_in = None
        if state.active:
            next_in = max(0.0, state.step_started_at + plan.step_seconds - self.clock())
        return {
            "model": plan.model,
            "id": state.id,
            "status": state.status,
            "alias": plan.alias,
            "baseline": plan.baseline,
            "candidate": plan.candidate,
            "steps": list(plan.steps),
            "step": state.step,
            "weight": state.weight,
            "step_seconds": plan.step_seconds,
            "min_requests": plan.min_requests,
            "min_labels": plan.min_labels,
            "guards": {
                "max_error_rate": plan.guards.max_error_rate,
                "max_p99_ms": plan.guards.max_p99_ms,
                "max_accuracy_drop": plan.guards.max_accuracy_drop,
            },
            "started_at": state.started_at,
            "step_started_at": state.step_started_at,
            "ended_at": state.ended_at,
            "next_step_in_s": next_in,
            "reason": state.reason,
            "figures": state.figures,
            "events": [
                {
                    "at": e.at,
                    "event": e.event,
                    "step": e.step,
                    "weight": e.weight,
                    "detail": e.detail,
                }
                for e in state.events
            ],
        }
