"""Rate-limit value objects, errors and the limiter protocol every backend implements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from mlserve.errors import MlserveError

__all__ = ["Decision", "Limit", "RateLimitUnavailableError", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket: `burst` requests at once, refilled at `rate` per second."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against its bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: float
    """Seconds until the bucket is full again."""
    retry_after_s: float
    """Seconds until one request would be allowed (0 when allowed)."""

    @classmethod
    def of(cls, limit: Limit, allowed: bool, tokens: float) -> Decision:
        """The outcome of a request that left `tokens` in its bucket (the same arithmetic,
        and so the same headers, whichever limiter took the token)."""
        return cls(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_after_s=(limit.burst - tokens) / limit.rate,
            retry_after_s=0.0 if allowed else (1.0 - tokens) / limit.rate,
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_after_s)).encode()),
        ]


class RateLimitUnavailableError(MlserveError):
    """Rate limits are shared through Redis, Redis is down, and the policy is fail-closed."""

    code = "rate_limit_unavailable"
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class RateLimiter(Protocol):
    """Takes one token from `key`'s bucket. In memory today; Redis (a Lua script doing the
    same arithmetic atomically, on the server's clock) when replicas must share buckets."""

    async def acquire(self, key: str, limit: Limit) -> Decision: ...
