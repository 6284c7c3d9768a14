"""Rate limiting stores: a token bucket per key, in memory or shared through Redis.

The limiter is an async protocol so a shared (Redis) implementation can replace the in-memory
one without touching the middleware (mlserve.server.middleware.ratelimit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.ratelimit.base import Decision, Limit, RateLimiter, RateLimitUnavailableError

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings

__all__ = ["Decision", "Limit", "RateLimitUnavailableError", "RateLimiter", "make_rate_limiter"]


def make_rate_limiter(settings: Settings, redis: RedisBackend | None = None) -> RateLimiter:
    """The limiter for these settings: shared through Redis when the server has a Redis
    backend (redis.url), else this process's own buckets."""
    if redis is None:
        from mlserve.ratelimit.memory import InMemoryRateLimiter

        return InMemoryRateLimiter()
    from mlserve.ratelimit.redis import RedisRateLimiter

    return RedisRateLimiter(redis, fail_open=settings.redis.rate_limit_fail_open)
