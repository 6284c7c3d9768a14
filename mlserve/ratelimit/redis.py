"""Rate limits shared by every replica: the token bucket as a Lua script in Redis."""

from __future__ import annotations

import logging
from typing import Any

from mlserve.backends.redis import RedisBackend, RedisUnreachableError
from mlserve.ratelimit.base import Decision, Limit, RateLimitUnavailableError
from mlserve.ratelimit.memory import InMemoryRateLimiter

__all__ = ["BUCKET_SCRIPT", "RedisRateLimiter"]

log = logging.getLogger(__name__)

# The in-memory limiter's arithmetic, done atomically where the bucket lives, on Redis's clock
# (replicas' clocks never meet). A bucket is a hash {tokens, ts}; it expires once it would be
# full again, which is when it is indistinguishable from a new one.
BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local level = string.format('%.9f', tokens)
redis.call('HSET', KEYS[1], 'tokens', level, 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, level}
"""


class RedisRateLimiter:
    """Token buckets in Redis, one per principal, shared by every replica and worker process.

    While Redis is down: fail open (the default) answers from this process's own buckets, so
    nobody is refused because of Redis and a single client is still limited per process;
    fail closed refuses limited requests with 503 rate_limit_unavailable."""

    def __init__(self, backend: RedisBackend, *, fail_open: bool = True) -> None:
        self.backend = backend
        self.fail_open = fail_open
        self.fallback = InMemoryRateLimiter()
        self._script: Any = backend.client.register_script(BUCKET_SCRIPT)
        self._degraded_logged = False
        backend.on_change(self._state_changed)

    def _state_changed(self, up: bool) -> None:
        if up:
            self._degraded_logged = False

    def _log_degraded(self) -> None:
        if self._degraded_logged:
            return
        self._degraded_logged = True
        if self.fail_open:
            log.warning(
                "rate limits: redis is unreachable, failing open (redis.rate_limit_fail_open): "
                "each process limits with its own buckets until it is back"
            )
        else:
            log.warning(
                "rate limits: redis is unreachable, failing closed "
                "(redis.rate_limit_fail_open = false): limited requests get 503 until it is back"
            )

    async def acquire(self, key: str, limit: Limit) -> Decision:
        try:
            allowed, tokens = await self.backend.call(
                self._script,
                keys=[self.backend.key("rl", key)],
                args=[repr(limit.rate), limit.burst],
            )
        except RedisUnreachableError:
            pass  # a refusal (RedisRefusedError) is not an outage: it is raised
        else:
            return Decision.of(limit, bool(int(allowed)), float(tokens))
        self._log_degraded()
        if self.fail_open:
            return await self.fallback.acquire(key, limit)
        raise RateLimitUnavailableError(
            "rate limiting is unavailable (its shared store, Redis, is unreachable); "
            "retry in a moment"
        )
