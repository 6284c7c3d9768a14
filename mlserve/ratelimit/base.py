"""Rate-limit value objects and the limiter protocol every backend implements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Decision", "Limit", "RateLimiter"]


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

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_after_s)).encode()),
        ]


class RateLimiter(Protocol):
    """Takes one token from `key`'s bucket. In memory today; Redis (a Lua script doing the
    same arithmetic atomically, on the server's clock) when replicas must share buckets."""

    async def acquire(self, key: str, limit: Limit) -> Decision: ...
