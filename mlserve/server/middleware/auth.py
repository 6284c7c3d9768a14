"""Authentication as pure ASGI: checks credentials and roles before any route runs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from mlserve.config import Settings
from mlserve.errors import Forbidden, Unauthorized
from mlserve.keys.auth import Authenticator
from mlserve.server.auth import AccessPolicy, credential_of, is_preflight
from mlserve.server.errors import send_exception
from mlserve.server.scope import route_path
from mlserve.serving.metrics import ServerMetrics

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend

__all__ = ["AuthMiddleware", "with_auth"]

log = logging.getLogger(__name__)


class AuthMiddleware:
    """Checks credentials and roles before any route (the predict fast lane included) runs,
    and puts the Principal in scope["state"]["principal"] for later layers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        policy: AccessPolicy,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.policy = policy
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not await self.authenticator.enabled():  # no keys and no JWT: nothing to check
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")  # websockets (none today) are checked like a GET
        access = self.policy.required(method, route_path(scope))
        if access == "open" or is_preflight(scope):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(credential_of(scope))
            # Known from here on: a 403 is logged with who was refused.
            scope.setdefault("state", {})["principal"] = principal
            if not principal.allows(access):
                held = f"role '{principal.role}'" if principal.role else "no mlserve role"
                raise Forbidden(f"this request needs the '{access}' role; the caller has {held}")
        except (Unauthorized, Forbidden) as exc:
            log.debug("refused %s %s: %s", method, scope["path"], exc.message)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            else:
                await send_exception(scope, send, exc, metrics=self.metrics)
            return
        await self.app(scope, receive, send)


def with_auth(
    app: ASGIApp, settings: Settings, metrics: ServerMetrics, redis: RedisBackend | None = None
) -> ASGIApp:
    """`app` behind the auth check (raises ConfigError for broken auth settings)."""
    policy = AccessPolicy.from_settings(settings.auth)
    authenticator = Authenticator.from_settings(settings, redis)
    return AuthMiddleware(app, authenticator=authenticator, policy=policy, metrics=metrics)
