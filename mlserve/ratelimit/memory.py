"""Token buckets in this process's memory (per worker with `--workers N`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mlserve.ratelimit.base import Decision, Limit

__all__ = ["InMemoryRateLimiter"]

MAX_BUCKETS = 100_000
SWEEP_EVERY = 1024
SWEEP_MAX = 256


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    limit: Limit

    def level(self, now: float) -> float:
        elapsed = max(0.0, now - self.updated)
        return min(float(self.limit.burst), self.tokens + elapsed * self.limit.rate)


class InMemoryRateLimiter:
    """Token buckets in this process. The table is bounded: idle buckets that have refilled
    (indistinguishable from new ones) are swept, and past `max_buckets` the least recently
    used go first."""

    def __init__(
        self, *, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._calls = 0

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, key: str, limit: Limit) -> Decision:
        # No await inside: one event loop never interleaves two updates of a bucket.
        now = self._clock()
        bucket = self._buckets.get(key)
        tokens = float(limit.burst) if bucket is None else bucket.level(now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if bucket is None:
            self._buckets[key] = _Bucket(tokens, now, limit)
        else:
            bucket.tokens, bucket.updated, bucket.limit = tokens, now, limit
            self._buckets.move_to_end(key)
        self._calls += 1
        if self._calls % SWEEP_EVERY == 0:
            self._sweep(now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return Decision.of(limit, allowed, tokens)

    def _sweep(self, now: float) -> None:
        """Drop refilled buckets from the least recently used end."""
        for _ in range(SWEEP_MAX):
            if not self._buckets:
                return
            key, bucket = next(iter(self._buckets.items()))
            if bucket.level(now) < bucket.limit.burst:
                return
            del self._buckets[key]
