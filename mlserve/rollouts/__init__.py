"""Canary rollouts: the store protocol and value objects (base), the SQLite (one host) and
Redis (replicas) stores, and the factory that picks one from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.rollouts.base import (
    ACTIVE,
    LATENCY_BOUNDS_MS,
    Guards,
    RolloutConflictError,
    RolloutEvent,
    RolloutNotFoundError,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    RolloutStore,
    RolloutsUnavailableError,
    WindowCounts,
    new_rollout_id,
)

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings

__all__ = [
    "ACTIVE",
    "LATENCY_BOUNDS_MS",
    "ROLLOUTS_DATABASE",
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
    "open_rollout_store",
]

ROLLOUTS_DATABASE = "rollouts.sqlite3"  # in the state directory (settings.state_dir)


async def open_rollout_store(
    settings: Settings, *, redis: RedisBackend | None = None
) -> RolloutStore:
    """The rollout store for these settings: in Redis, shared by every replica, when there is
    a Redis backend (redis.url); else SQLite in the state directory (one host).
    RolloutsUnavailableError when the SQLite file cannot be opened."""
    if redis is not None:
        from mlserve.rollouts.redis import RedisRolloutStore

        return RedisRolloutStore(redis)
    from mlserve.rollouts.sqlite import SqliteRolloutStore

    return await SqliteRolloutStore.open(settings.state_dir / ROLLOUTS_DATABASE)
