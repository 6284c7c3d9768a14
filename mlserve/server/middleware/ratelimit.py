"""Rate limiting as ASGI: a token bucket per principal (or client address when auth is off).

The buckets live in a limiter from mlserve.ratelimit (in memory, or shared through Redis).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.config import RateLimitSettings, Settings
from mlserve.errors import MlserveError, RateLimited
from mlserve.keys.auth import Principal
from mlserve.ratelimit import Limit, RateLimiter, make_rate_limiter
from mlserve.server.errors import send_exception
from mlserve.server.scope import route_path
from mlserve.serving.metrics import ServerMetrics

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend

# Probes and scrapes are never limited: a throttled readiness check takes a healthy pod out.
EXEMPT_PATHS = frozenset(
    {"/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready", "/metrics"}
)


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
            await send_exception(scope, send, unavailable, metrics=self.metrics)
            return
        headers = decision.headers()
        if not decision.allowed:
            exc = RateLimited(
                f"rate limit exceeded ({limit.burst} requests at once, {limit.rate:g} per "
                f"second); retry in {math.ceil(decision.retry_after_s)} s",
                retry_after=decision.retry_after_s,
            )
            await send_exception(scope, send, exc, metrics=self.metrics, headers=headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_rate_limit(
    app: ASGIApp, settings: Settings, metrics: ServerMetrics, redis: RedisBackend | None = None
) -> ASGIApp:
    """`app` behind the rate limiter when `rate_limit.enabled` (`app` itself otherwise)."""
    if not settings.rate_limit.enabled:
        return app
    return RateLimitMiddleware(
        app,
        limiter=make_rate_limiter(settings, redis),
        config=settings.rate_limit,
        metrics=metrics,
    )
