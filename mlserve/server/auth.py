"""Which role a request needs (the access policy) and where its credential is. Credentials
themselves are checked by mlserve.keys.auth; the middleware is middleware/auth.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import Scope

from mlserve.config import AuthSettings
from mlserve.keys.auth import Access

__all__ = ["AccessPolicy", "credential_of", "is_preflight"]

OPEN_PATHS = frozenset({"/", "/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready"})
METRICS_PATHS = frozenset({"/metrics"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# The docs pages' scripts, styles and icon (mlserve.server.docs): public when the pages are.
DOCS_ASSETS_PREFIX = "/docs/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Admin-only, whatever the method: reload, traffic splits, version exports, admin routes, V2
# model repository.
ADMIN_PATTERNS = (
    re.compile(r"^/api/models/[^/]+/reload/?$"),
    re.compile(r"^/api/models/[^/]+/traffic(?:/.*)?$"),
    re.compile(r"^/api/models/[^/]+/versions/[^/]+/export/?$"),  # the whole artifact
    re.compile(r"^/api/admin(?:/.*)?$"),
    re.compile(r"^/v2/repository(?:/.*)?$"),
)
# Admin-only for DELETE: cancelling or removing jobs (and the async alias of the jobs routes).
ADMIN_DELETE_PATTERNS = (
    re.compile(r"^/api/jobs/.+"),
    re.compile(r"^/api/predict/async/.+"),
)


# ---------------------------------------------------------------------------- access policy
@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Which role a method and path need. Everything not open or admin needs `predict`."""

    public_metrics: bool = True
    public_docs: bool = True

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> AccessPolicy:
        return cls(public_metrics=auth.public_metrics, public_docs=auth.public_docs)

    def required(self, method: str, path: str) -> Access:
        if path in OPEN_PATHS:
            return "open"
        if self.public_metrics and path in METRICS_PATHS:
            return "open"
        if self.public_docs and (path in DOCS_PATHS or path.startswith(DOCS_ASSETS_PREFIX)):
            return "open"
        if any(p.match(path) for p in ADMIN_PATTERNS):
            return "admin"
        if method == "DELETE" and any(p.match(path) for p in ADMIN_DELETE_PATTERNS):
            return "admin"
        if path.startswith("/api/models/") and method not in SAFE_METHODS:
            return "admin"  # changing a model (aliases, reloads) is never a predict-role action
        return "predict"


def is_preflight(scope: Scope) -> bool:
    """A CORS preflight carries no credentials; the CORS middleware answers it."""
    if scope.get("method") != "OPTIONS":
        return False
    names = {key for key, _ in scope.get("headers", ())}
    return b"origin" in names and b"access-control-request-method" in names


def credential_of(scope: Scope) -> str | None:
    """`Authorization: Bearer <credential>`, else `X-API-Key: <credential>`."""
    bearer = api_key = None
    for key, value in scope.get("headers", ()):
        if key == b"authorization" and bearer is None:
            scheme, _, rest = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                bearer = rest.strip()
        elif key == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip() or None
    return bearer or api_key
