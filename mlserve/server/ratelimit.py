"""Rate limiting: a token bucket per principal (or client address when auth is off), as ASGI.

The limiter is an async protocol so a shared (Redis) implementation can replace the in-memory
one without touching the middleware. In memory, buckets are per process: with `--workers N`
each worker enforces the limit on its own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.config import RateLimitSettings, Settings
from mlserve.errors import MlserveError, RateLimited
from mlserve.server.auth import Principal, error_content, route_path, send_error
from mlserve.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlserve.redis_backend import RedisBackend

# Probes and scrapes are never limited: a throttled readiness check takes a healthy pod out.
EXEMPT_PATHS = frozenset(
    {"/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready", "/metrics"}
)
MAX_BUCKETS = 100_000
SWEEP_EVERY = 1024
SWEEP_MAX = 256


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
        return Decision(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_after_s=(limit.burst - tokens) / limit.rate,
            retry_after_s=0.0 if allowed else (1.0 - tokens) / limit.rate,
        )

    def _sweep(self, now: float) -> None:
        """Drop refilled buckets from the least recently used end."""
        for _ in range(SWEEP_MAX):
            if not self._buckets:
                return
            key, bucket = next(iter(self._buckets.items()))
            if bucket.level(now) < bucket.limit.burst:
                return
            del self._buckets[key]


def make_rate_limiter(settings: Settings, redis: RedisBackend | None = None) -> RateLimiter:
    """The limiter for these settings: shared through Redis when the server has a Redis
    backend (redis.url), else this process's own buckets."""
    if redis is None:
        return InMemoryRateLimiter()
    from mlserve.server.redis_ratelimit import RedisRateLimiter

    return RedisRateLimiter(redis, fail_open=settings.redis.rate_limit_fail_open)


class RateLimitMiddleware:
    """Answers 429 with Retry-After when a client's bucket is empty; X-RateLimit-* headers on
    every limited response. Runs after auth, so keyed by the authenticated principal."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        config: RateLimitSettings,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.default = Limit(rate=config.rate, burst=config.burst)
        self.roles = {role: Limit(rate=r.rate, burst=r.burst) for role, r in config.roles.items()}
        self.metrics = metrics

    def _key_and_limit(self, scope: Scope) -> tuple[str, Limit]:
        principal = scope.get("state", {}).get("principal")
        if isinstance(principal, Principal):
            limit = self.roles.get(principal.role, self.default) if principal.role else None
            return principal.id, limit or self.default
        client = scope.get("client")
        return f"addr:{client[0] if client else 'unknown'}", self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or route_path(scope) in EXEMPT_PATHS
        ):
            await self.app(scope, receive, send)
            return
        key, limit = self._key_and_limit(scope)
        try:
            decision = await self.limiter.acquire(key, limit)
        except MlserveError as unavailable:  # a shared limiter failing closed (Redis down)
            await send_error(scope, send, unavailable, metrics=self.metrics)
            return
        headers = decision.headers()
        if not decision.allowed:
            exc = RateLimited(
                f"rate limit exceeded ({limit.burst} requests at once, {limit.rate:g} per "
                f"second); retry in {math.ceil(decision.retry_after_s)} s",
                retry_after=decision.retry_after_s,
            )
            await send_error(scope, send, exc, metrics=self.metrics, headers=headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_openapi_rate_limit(app: FastAPI) -> None:
    """Document the 429 answer on every limited operation."""
    original = app.openapi
    patched = False

    def openapi() -> dict[str, Any]:
        nonlocal patched
        schema = original()
        if patched:
            return schema
        patched = True
        schemas = schema.get("components", {}).get("schemas", {})
        for path, operations in schema.get("paths", {}).items():
            if path in EXEMPT_PATHS:
                continue
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation["responses"].setdefault(
                        "429",
                        {
                            "description": "Rate limit exceeded; retry after Retry-After seconds.",
                            "content": error_content(schemas, path),
                        },
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_rate_limit(
    app: FastAPI, settings: Settings, metrics: ServerMetrics, redis: RedisBackend | None = None
) -> None:
    """Add the rate-limit middleware when `rate_limit.enabled` (a no-op otherwise)."""
    if not settings.rate_limit.enabled:
        return
    app.add_middleware(
        RateLimitMiddleware,
        limiter=make_rate_limiter(settings, redis),
        config=settings.rate_limit,
        metrics=metrics,
    )
    install_openapi_rate_limit(app)
