"""The rollout store in Redis, shared by every replica (redis.url set).

Layout under `redis.key_prefix`:

    rollout:m:<model>           hash    the model's latest rollout: id, status, revision, steps
                                        (how many the plan has), state (RolloutState JSON)
    rollout:running             set     the models whose rollout is running
    rollout:lease:<model>       string  who drives the model's rollout; expires (PX) with the lease
    rollout:w:<id>:<step>       hash    "<version>:<slot>" -> count, the slots of
                                        WindowCounts.to_list(); expires window_ttl_s after
                                        its last write

Creating and replacing a rollout are one Lua script each (the running check, the
compare-and-set on id and revision, the running set and the windows of the replaced rollout
go together); so are renewing and releasing a lease, which only its holder may do. Windows are
added with HINCRBY, so every replica adds what it answered in any order. Lease expiry is
Redis's own clock, the same for every replica. Computed key names (the windows CREATE drops)
share the prefix, so a `{tag}` in redis.key_prefix keeps every key in one cluster slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mlserve.backends.redis import RedisBackend, RedisCaller, reply_text
from mlserve.rollouts.base import (
    RolloutConflictError,
    RolloutState,
    RolloutsUnavailableError,
    WindowCounts,
)

__all__ = ["WINDOW_TTL_S", "RedisRolloutStore"]

WINDOW_TTL_S = 7 * 86400.0

# KEYS: state, running set. ARGV: model, id, number of steps, state JSON, window key prefix
# ("...rollout:w:"). Returns {0, running id} when one is running, else {1}.
CREATE = """
local cur = redis.call('HMGET', KEYS[1], 'id', 'status', 'steps')
if cur[2] == 'running' then return {0, cur[1]} end
if cur[1] and cur[1] ~= ARGV[2] then
  for i = 0, (tonumber(cur[3]) or 0) - 1 do
    redis.call('DEL', ARGV[5] .. cur[1] .. ':' .. i)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'status', 'running', 'revision', '1',
           'steps', ARGV[3], 'state', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return {1}
"""

# KEYS: state, running set. ARGV: model, id, expected revision, status, state JSON, the new
# revision. Returns 1 when written, 0 when the stored rollout is another one or has moved on.
REPLACE = """
local cur = redis.call('HMGET', KEYS[1], 'id', 'revision')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'revision', ARGV[6], 'state', ARGV[5])
if ARGV[4] == 'running' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"""

# KEYS: lease. ARGV: holder, ttl (ms). 1 when `holder` has the lease now (taken or renewed).
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: holder.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisRolloutStore:
    """RolloutStore in Redis (see the module docstring); every method is one round trip.
    Raises RolloutsUnavailableError (503 rollouts_unavailable) while Redis is unreachable."""

    def __init__(self, backend: RedisBackend, *, window_ttl_s: float = WINDOW_TTL_S) -> None:
        self.backend = backend
        self.window_ttl_s = window_ttl_s
        client = backend.client
        self._create = client.register_script(CREATE)
        self._replace = client.register_script(REPLACE)
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self.running_key = backend.key("rollout", "running")
        self._call = RedisCaller(
            backend,
            store="rollout store",
            subject="rollouts are unavailable: their store (Redis)",
            error=RolloutsUnavailableError,
        )

    # ------------------------------------------------------------------ keys
    def _state_key(self, model: str) -> str:
        return self.backend.key("rollout", "m", model)

    def _lease_key(self, model: str) -> str:
        return self.backend.key("rollout", "lease", model)

    def _window_key(self, rollout_id: str, step: int) -> str:
        return self.backend.key("rollout", "w", rollout_id, step)

    # ------------------------------------------------------------------ RolloutStore
    async def get(self, model: str) -> RolloutState | None:
        raw = await self._call(self.backend.client.hget, self._state_key(model), "state")
        return None if raw is None else RolloutState.from_json(raw)

    async def create(self, state: RolloutState) -> RolloutState:
        if not state.active:
            raise ValueError(f"a new rollout must be running, not {state.status}")
        created = dataclasses.replace(state, revision=1)
        model = state.plan.model
        reply = await self._call(
            self._create,
            keys=[self._state_key(model), self.running_key],
            args=[
                model,
                created.id,
                len(created.plan.steps),
                created.to_json(),
                self.backend.key("rollout", "w", ""),
            ],
        )
        if int(reply[0]) == 0:
            raise RolloutConflictError(
                f"model '{model}' has a running rollout already ({reply_text(reply[1])}); "
                "wait for it to end or abort it first"
            )
        return created

    async def replace(self, state: RolloutState, *, expected_revision: int) -> RolloutState | None:
        written = dataclasses.replace(state, revision=expected_revision + 1)
        model = state.plan.model
        changed = await self._call(
            self._replace,
            keys=[self._state_key(model), self.running_key],
            args=[
                model,
                state.id,
                str(expected_revision),
                written.status,
                written.to_json(),
                str(written.revision),
            ],
        )
        return written if int(changed) == 1 else None

    async def running(self) -> list[RolloutState]:
        client = self.backend.client
        models = sorted(reply_text(m) for m in await self._call(client.smembers, self.running_key))
        if not models:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.hmget(self._state_key(model), "status", "state")
            replies = await self._call(pipe.execute)
        return [
            RolloutState.from_json(raw)
            for status, raw in replies
            if raw is not None and status is not None and reply_text(status) == "running"
        ]

    async def acquire(self, model: str, holder: str, ttl_s: float) -> bool:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        taken = await self._call(
            self._acquire,
            keys=[self._lease_key(model)],
            args=[holder, max(1, round(ttl_s * 1000))],
        )
        return int(taken) == 1

    async def release(self, model: str, holder: str) -> None:
        await self._call(self._release, keys=[self._lease_key(model)], args=[holder])

    async def add_windows(self, items: Sequence[tuple[str, int, int, WindowCounts]]) -> None:
        increments: dict[str, list[tuple[str, int]]] = {}
        for rollout_id, step, version, counts in items:
            for slot, n in enumerate(counts.to_list()):
                if n:
                    key = self._window_key(rollout_id, step)
                    increments.setdefault(key, []).append((f"{version}:{slot}", n))
        if not increments:
            return
        ttl_ms = max(1, round(self.window_ttl_s * 1000))
        # MULTI/EXEC: a batch is counted whole or not at all, so a writer that retries a
        # failed batch never counts part of it twice.
        async with self.backend.client.pipeline(transaction=True) as pipe:
            for key, fields in increments.items():
                for name, n in fields:
                    pipe.hincrby(key, name, n)
                pipe.pexpire(key, ttl_ms)
            await self._call(pipe.execute)

    async def windows(self, rollout_id: str, step: int) -> dict[int, WindowCounts]:
        fields = await self._call(self.backend.client.hgetall, self._window_key(rollout_id, step))
        slots: dict[int, list[int]] = {}
        for raw_field, raw_value in fields.items():
            version, _, slot = reply_text(raw_field).partition(":")
            if not (version.lstrip("-").isdigit() and slot.isdigit()):
                continue
            values = slots.setdefault(int(version), [0, 0])
            index = int(slot)
            values.extend([0] * (index + 1 - len(values)))
            values[index] = int(raw_value)
        return {version: WindowCounts.from_list(values) for version, values in slots.items()}

    async def close(self) -> None:
        """The backend (shared with the cache, rate limits, jobs...) is closed by its owner."""
