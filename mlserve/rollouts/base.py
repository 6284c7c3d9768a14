"""What every rollout store shares: the RolloutStore protocol, a rollout's value objects (its
plan, its state and events, the per-step request windows) and their JSON form."""

from __future__ import annotations

import bisect
import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import orjson

from mlserve.errors import MlserveError, NotFoundError

__all__ = [
    "ACTIVE",
    "LATENCY_BOUNDS_MS",
    "Guards",
    "RolloutConflictError",
    "RolloutEvent",
    "RolloutNotFoundError",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "RolloutStore",
    "RolloutsUnavailableError",
    "WindowCounts",
    "new_rollout_id",
]

RolloutStatus = Literal["running", "promoted", "rolled_back", "aborted"]
ACTIVE: frozenset[str] = frozenset({"running"})
EventKind = Literal["started", "step", "waiting", "promoted", "rolled_back", "aborted"]

# Upper bounds (ms) of the latency buckets a window counts requests in; the last bucket is
# everything above. Log-spaced: a p99 read from them is within ~12 % of the true one.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    round(0.1 * 1.25**i, 4) for i in range(int(math.log(60_000 / 0.1, 1.25)) + 2)
)


# ---------------------------------------------------------------------------- errors
class RolloutNotFoundError(NotFoundError):
    """The model has no rollout (never started, or its record expired)."""

    code = "rollout_not_found"


class RolloutConflictError(MlserveError):
    """A rollout cannot start or change now (one is running, or a manual split is set)."""

    status_code = 409
    code = "rollout_conflict"


class RolloutsUnavailableError(MlserveError):
    """The rollout store cannot be reached (could not be opened, or Redis is down)."""

    status_code = 503
    code = "rollouts_unavailable"


def new_rollout_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------- plan
@dataclass(frozen=True, slots=True)
class Guards:
    """Limits the candidate is held to; None: that guard is off."""

    max_error_rate: float | None = 0.01
    max_p99_ms: float | None = None
    max_accuracy_drop: float | None = 0.02


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """What was asked: move `alias` of `model` from `baseline` to `candidate` through `steps`
    (the candidate's share of traffic, percent, the last one 100)."""

    model: str
    alias: str
    baseline: int
    candidate: int
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    step_seconds: float = 300.0
    min_requests: int = 200
    min_labels: int = 0
    guards: Guards = field(default_factory=Guards)


# ---------------------------------------------------------------------------- state
@dataclass(frozen=True, slots=True)
class RolloutEvent:
    at: float  # wall-clock time (time.time())
    event: EventKind
    step: int  # index into plan.steps (-1 before the first)
    weight: float  # the candidate's share at that moment, percent
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RolloutState:
    """One rollout as stored. `revision` grows by one with every write (compare-and-set), so
    two replicas never both move the same step."""

    id: str
    plan: RolloutPlan
    status: RolloutStatus
    step: int  # index into plan.steps of the current step
    started_at: float
    step_started_at: float
    ended_at: float | None = None
    reason: str | None = None
    revision: int = 0
    events: tuple[RolloutEvent, ...] = ()
    # The guard figures of the latest evaluation (what GET shows on every replica).
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def weight(self) -> float:
        """The candidate's share of traffic now: all of it once promoted (the alias names
        it), none once rolled back or aborted."""
        if self.status == "promoted":
            return 100.0
        if not self.active:
            return 0.0
        return self.plan.steps[self.step]

    def with_event(self, event: RolloutEvent, **changes: Any) -> RolloutState:
        return replace(self, events=(*self.events, event), **changes)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> RolloutState:
        data = orjson.loads(raw)
        plan = dict(data["plan"])
        plan["steps"] = tuple(float(s) for s in plan["steps"])
        plan["guards"] = Guards(**plan["guards"])
        data["plan"] = RolloutPlan(**plan)
        data["events"] = tuple(RolloutEvent(**e) for e in data["events"])
        return cls(**data)


# ---------------------------------------------------------------------------- windows
@dataclass(slots=True)
class WindowCounts:
    """Requests one version answered during one step: how many, how many failed (5xx), and
    their latencies counted in LATENCY_BOUNDS_MS buckets (one more for above the last)."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def observe(self, seconds: float, *, failed: bool, n: int = 1) -> None:
        self.requests += n
        if failed:
            self.errors += n
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)] += n

    def merge(self, other: WindowCounts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n

    @property
    def empty(self) -> bool:
        return self.requests == 0

    def quantile_ms(self, q: float) -> float | None:
        """The latency (ms) `q` of the requests are within: the upper bound of the bucket the
        quantile falls in (the last bound for the overflow bucket); None without requests."""
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = math.ceil(q * total)
        running = 0
        for i, n in enumerate(self.buckets):
            running += n
            if running >= rank:
                return LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
        return LATENCY_BOUNDS_MS[-1]

    def to_list(self) -> list[int]:
        """[requests, errors, *buckets]: the stored form."""
        return [self.requests, self.errors, *self.buckets]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> WindowCounts:
        size = len(LATENCY_BOUNDS_MS) + 1
        buckets = [int(v) for v in values[2:]][:size]
        buckets += [0] * (size - len(buckets))
        return cls(requests=int(values[0]), errors=int(values[1]), buckets=buckets)


# ---------------------------------------------------------------------------- protocol
class RolloutStore(Protocol):
    """Where rollouts live: SQLite in the state directory (one host), or Redis (replicas).
    Every method is a coroutine; a store that cannot be reached raises
    RolloutsUnavailableError."""

    async def get(self, model: str) -> RolloutState | None:
        """The model's latest rollout (running or ended), or None."""
        ...

    async def create(self, state: RolloutState) -> RolloutState:
        """Store a new running rollout (revision 1); RolloutConflictError when the model has a
        running one already."""
        ...

    async def replace(self, state: RolloutState, *, expected_revision: int) -> RolloutState | None:
        """Write `state` (as revision expected_revision + 1) if the stored rollout of its model
        is still at `expected_revision` with the same id; the written state, or None when
        another writer came first (nothing written)."""
        ...

    async def running(self) -> list[RolloutState]:
        """Every running rollout."""
        ...

    async def acquire(self, model: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease that lets `holder` drive `model`'s rollout for `ttl_s`;
        False while another holder's lease is live."""
        ...

    async def release(self, model: str, holder: str) -> None:
        """Give the lease up if `holder` has it."""
        ...

    async def add_windows(self, items: Sequence[tuple[str, int, int, WindowCounts]]) -> None:
        """Add (rollout id, step, version, counts) to the stored totals (every replica adds
        what it answered; additive, so the order of writers does not matter)."""
        ...

    async def windows(self, rollout_id: str, step: int) -> dict[int, WindowCounts]:
        """The totals of one step of one rollout, by version."""
        ...

    async def close(self) -> None: ...
