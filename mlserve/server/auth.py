"""Authentication and roles: API keys (key file and settings) and optional JWTs, as pure ASGI.

The middleware sits outside the predict fast path, so every route is covered. Auth is on when
any key exists (the key file or `auth.keys`) or JWT is configured; once on it stays on for the
life of the process (revoking the last key must not open the server).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from mlserve.config import AuthSettings, Settings
from mlserve.errors import ConfigError, Forbidden, MlserveError, Unauthorized
from mlserve.keys import ROLES, KeyRecord, Role, hash_key, read_key_file, records_from_settings
from mlserve.server.errors import error_body, is_v2_path, v2_error_body
from mlserve.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlserve.redis_backend import RedisBackend

log = logging.getLogger(__name__)

Access = Literal["open", "predict", "admin"]
PrincipalKind = Literal["api_key", "jwt"]
ROLE_RANK: dict[str | None, int] = {None: 0, "predict": 1, "admin": 2}
KEY_FILE_CHECK_S = 1.0
JWT_LEEWAY_S = 30
JWT_EXTRA = "pip install 'mlserve[jwt]'"
MIN_SECRET_BYTES = 32
# Well-known placeholder secrets (jwt.io's examples among them) that pass a length check.
WEAK_SECRETS = frozenset(
    {
        "a-string-secret-at-least-256-bits-long",
        "your-256-bit-secret",
        "your-secret-key-change-this-in-production",
        "change-this-secret-key-in-production",
    }
)
CHALLENGE = 'Bearer realm="mlserve"'

OPEN_PATHS = frozenset({"/", "/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready"})
METRICS_PATHS = frozenset({"/metrics"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Admin-only, whatever the method: reload, traffic splits, admin routes, V2 model repository.
ADMIN_PATTERNS = (
    re.compile(r"^/api/models/[^/]+/reload/?$"),
    re.compile(r"^/api/models/[^/]+/traffic(?:/.*)?$"),
    re.compile(r"^/api/admin(?:/.*)?$"),
    re.compile(r"^/v2/repository(?:/.*)?$"),
)
# Admin-only for DELETE: cancelling or removing jobs (and the async alias of the jobs routes).
ADMIN_DELETE_PATTERNS = (
    re.compile(r"^/api/jobs/.+"),
    re.compile(r"^/api/predict/async/.+"),
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key's name or a JWT's subject, never the credential itself."""

    name: str
    role: Role | None
    kind: PrincipalKind

    @property
    def id(self) -> str:
        """Unique across kinds (a key and a JWT subject may share a name): rate-limit buckets."""
        return f"{self.kind}:{self.name}"

    def allows(self, access: Access) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK.get(access, 0)


# ---------------------------------------------------------------------------- access policy
def route_path(scope: Scope) -> str:
    """The path the router matches (scope["path"] minus any root_path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


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
        if self.public_docs and path in DOCS_PATHS:
            return "open"
        if any(p.match(path) for p in ADMIN_PATTERNS):
            return "admin"
        if method == "DELETE" and any(p.match(path) for p in ADMIN_DELETE_PATTERNS):
            return "admin"
        if path.startswith("/api/models/") and method not in SAFE_METHODS:
            return "admin"  # changing a model (aliases, reloads) is never a predict-role action
        return "predict"


def _is_preflight(scope: Scope) -> bool:
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


# ---------------------------------------------------------------------------- key sources
class KeySource(Protocol):
    """Where API keys come from: the key file, settings, and (with redis.url) the revocations
    shared by replicas through Redis (mlserve.server.redis_keys)."""

    async def find(self, digest: str) -> Sequence[KeyRecord]:
        """Records whose sha256 is `digest` (revoked and expired ones included)."""
        ...

    async def has_keys(self) -> bool:
        """Whether this source holds (or has held) any key: auth is on when one does."""
        ...


def _matches(records: Sequence[KeyRecord], digest: str) -> list[KeyRecord]:
    # Compare every record in constant time, without stopping at the first match.
    found = []
    for record in records:
        if hmac.compare_digest(record.sha256, digest):
            found.append(record)
    return found


class StaticKeySource:
    """Keys given as hashes in settings (`auth.keys`)."""

    def __init__(self, records: Sequence[KeyRecord]) -> None:
        self.records = list(records)

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> StaticKeySource:
        return cls(records_from_settings(auth))

    async def find(self, digest: str) -> Sequence[KeyRecord]:
        return _matches(self.records, digest)

    async def has_keys(self) -> bool:
        return bool(self.records)


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    # The inode changes on every atomic replace, even within one mtime tick.
    return st.st_ino, st.st_mtime_ns, st.st_size


class FileKeySource:
    """The key file written by `mlserve keys`, re-read when it changes (checked at most once
    per `check_interval_s`), so a revocation reaches a running server within about a second."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval_s: float = KEY_FILE_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._signature = _file_signature(path)
        self.records = read_key_file(path)  # a broken file at startup is a ConfigError
        self._had_keys = bool(self.records)
        self._checked = clock()
        self._refreshing = False

    async def refresh(self) -> None:
        if self._refreshing or self._clock() - self._checked < self.check_interval_s:
            return
        self._refreshing = True
        try:
            await asyncio.to_thread(self.reload_if_changed)
        finally:
            self._checked = self._clock()
            self._refreshing = False

    def reload_if_changed(self) -> bool:
        signature = _file_signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            records = read_key_file(self.path)
        except ConfigError as exc:
            # Keep the keys we had (a human may be mid-edit); the next change is tried again.
            log.error("%s; keeping the %d keys loaded before", exc.message, len(self.records))
            return False
        self.records = records
        self._had_keys = self._had_keys or bool(records)
        active = sum(1 for r in records if r.status() == "active")
        log.info("key file %s reloaded: %d keys, %d active", self.path, len(records), active)
        return True

    async def find(self, digest: str) -> Sequence[KeyRecord]:
        await self.refresh()
        return _matches(self.records, digest)

    async def has_keys(self) -> bool:
        await self.refresh()
        return self._had_keys


# ---------------------------------------------------------------------------- JWT
def jwt_configured(auth: AuthSettings) -> bool:
    return auth.jwt_secret is not None or auth.jwt_public_key is not None


def _check_secret(secret: str) -> None:
    weak = (
        len(secret.encode()) < MIN_SECRET_BYTES
        or secret.lower() in WEAK_SECRETS
        or len(set(secret)) < 8  # "aaaa…", "abababab…": long but guessable
    )
    if weak:
        raise ConfigError(
            f"auth.jwt_secret is empty, a placeholder or shorter than {MIN_SECRET_BYTES} bytes; "
            "set a random secret, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )


def _role_of(claims: dict[str, Any]) -> Role | None:
    """The highest mlserve role named by the `role` claim or the `scope` (or `scp`) claim."""
    names: list[str] = []
    for claim, split in (("role", False), ("roles", False), ("scope", True), ("scp", True)):
        value = claims.get(claim)
        if isinstance(value, str):
            names.extend(value.split() if split else [value])
        elif isinstance(value, list):
            names.extend(v for v in value if isinstance(v, str))
    granted = {n.removeprefix("mlserve:") for n in names}
    for role in reversed(ROLES):  # admin first
        if role in granted:
            return role
    return None


class JwtVerifier:
    """Bearer JWTs: HS256 with `auth.jwt_secret`, RS256 with `auth.jwt_public_key`."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_pem: bytes | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = JWT_LEEWAY_S,
    ) -> None:
        try:
            import jwt  # noqa: F401 - the optional dependency is checked at startup
        except ImportError:
            raise ConfigError(
                f"JWT settings (auth.jwt_secret / auth.jwt_public_key) need PyJWT: {JWT_EXTRA}"
            ) from None
        self.keys: dict[str, Any] = {}
        if secret is not None:
            _check_secret(secret)
            self.keys["HS256"] = secret
        if public_key_pem is not None:
            self.keys["RS256"] = _load_public_key(public_key_pem)
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> JwtVerifier | None:
        if not jwt_configured(auth):
            return None
        pem = None
        if auth.jwt_public_key is not None:
            path = auth.jwt_public_key.expanduser()
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"auth.jwt_public_key {path} cannot be read: {exc.strerror}"
                ) from None
        return cls(
            secret=auth.jwt_secret.get_secret_value() if auth.jwt_secret is not None else None,
            public_key_pem=pem,
            audience=auth.jwt_audience,
            issuer=auth.jwt_issuer,
        )

    def verify(self, token: str) -> Principal:
        import jwt

        accepted = ", ".join(sorted(self.keys))
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", invalid_token=True) from None
        if not isinstance(algorithm, str) or algorithm not in self.keys:
            raise Unauthorized(
                f"token algorithm not accepted; this server accepts {accepted}", invalid_token=True
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.keys[algorithm],
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired", invalid_token=True) from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token is not valid yet (nbf)", invalid_token=True) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token has no '{exc.claim}' claim", invalid_token=True) from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience not accepted", invalid_token=True) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token issuer not accepted", invalid_token=True) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid", invalid_token=True) from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token", invalid_token=True) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token 'sub' claim must be a non-empty string", invalid_token=True)
        return Principal(name=subject[:256], role=_role_of(claims), kind="jwt")


def _load_public_key(pem: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise ConfigError(
            f"RS256 tokens (auth.jwt_public_key) need cryptography: {JWT_EXTRA}"
        ) from None
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise ConfigError("auth.jwt_public_key is not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("auth.jwt_public_key is not an RSA public key (RS256 needs one)")
    return key


# ---------------------------------------------------------------------------- authenticator
class Authenticator:
    """Turns a presented credential into a Principal, or refuses it with Unauthorized."""

    def __init__(self, *, sources: Sequence[KeySource], jwt: JwtVerifier | None = None) -> None:
        self.sources = list(sources)
        self.jwt = jwt
        self._enabled = jwt is not None

    @classmethod
    def from_settings(cls, settings: Settings, redis: RedisBackend | None = None) -> Authenticator:
        """Raises ConfigError for a broken key file or JWT setting (serve exits with 2). With a
        Redis backend, revocations shared through Redis are honoured too."""
        sources: list[KeySource] = [
            FileKeySource(settings.keys_file),
            StaticKeySource.from_settings(settings.auth),
        ]
        if redis is not None:
            from mlserve.server.redis_keys import RedisRevocationSource

            sources.append(RedisRevocationSource(redis))
        return cls(sources=sources, jwt=JwtVerifier.from_settings(settings.auth))

    async def enabled(self) -> bool:
        """On when JWT is configured or any source has a key; then on for good."""
        if not self._enabled:
            for source in self.sources:
                if await source.has_keys():
                    self._enabled = True
                    break
        return self._enabled

    async def authenticate(self, credential: str | None) -> Principal:
        if not credential:
            raise Unauthorized(
                "missing credentials: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        digest = hash_key(credential)
        found: list[KeyRecord] = []
        for source in self.sources:
            found.extend(await source.find(digest))
        if not found:
            raise Unauthorized("invalid API key", invalid_token=True)
        statuses = {record.status() for record in found}
        if "revoked" in statuses:
            raise Unauthorized("API key has been revoked", invalid_token=True)
        if "active" not in statuses:
            raise Unauthorized("API key has expired", invalid_token=True)
        record = next(r for r in found if r.status() == "active")
        return Principal(name=record.name, role=record.role, kind="api_key")


def auth_configured(settings: Settings) -> bool:
    """Whether a server over `settings` starts with auth on; ConfigError for broken settings
    (the checks create_app makes, run by `serve` before it binds)."""
    has_jwt = JwtVerifier.from_settings(settings.auth) is not None
    return has_jwt or bool(settings.auth.keys) or bool(read_key_file(settings.keys_file))


# ---------------------------------------------------------------------------- ASGI
async def send_error(
    scope: Scope,
    send: Send,
    exc: MlserveError,
    *,
    metrics: ServerMetrics | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the project's error shape (the V2 shape on /v2 paths) from pure ASGI."""
    state = scope.setdefault("state", {})
    state["error_code"] = exc.code
    if metrics is not None:
        metrics.errors.labels(exc.code).inc()
    if is_v2_path(route_path(scope)):
        body = v2_error_body(exc.message)
    else:
        body = error_body(exc.code, exc.message, state.get("request_id"))
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers().items())
    out.extend(headers)
    await send({"type": "http.response.start", "status": exc.status_code, "headers": out})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """Checks credentials and roles before any route (the predict fast path included) runs,
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
        method = scope.get("method", "GET")  # websockets (none today) are checked like a GET
        access = self.policy.required(method, route_path(scope))
        if access == "open" or _is_preflight(scope) or not await self.authenticator.enabled():
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(credential_of(scope))
            if not principal.allows(access):
                held = f"role '{principal.role}'" if principal.role else "no mlserve role"
                raise Forbidden(f"this request needs the '{access}' role; the caller has {held}")
        except (Unauthorized, Forbidden) as exc:
            log.debug("refused %s %s: %s", method, scope["path"], exc.message)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            else:
                await send_error(scope, send, exc, metrics=self.metrics)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------- OpenAPI
SECURITY_SCHEMES: dict[str, Any] = {
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `mlserve keys create`, or a JWT when configured.",
    },
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def error_content(schemas: dict[str, Any], path: str) -> dict[str, Any]:
    name = "V2ErrorResponse" if is_v2_path(path) else "ErrorResponse"
    schema = {"$ref": f"#/components/schemas/{name}"} if name in schemas else {"type": "object"}
    return {"application/json": {"schema": schema}}


def install_openapi_security(app: FastAPI, policy: AccessPolicy) -> None:
    """Declare bearer and X-API-Key security (the Authorize button in /docs), mark open routes
    as needing none, and document 401/403 on the others."""
    original = app.openapi
    patched = False

    def openapi() -> dict[str, Any]:
        nonlocal patched
        schema = original()  # FastAPI caches the dict: patch it in place once
        if patched:
            return schema
        patched = True
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        schemas = components.get("schemas", {})
        schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if method not in HTTP_METHODS:
                    continue
                access = policy.required(method.upper(), path)
                if access == "open":
                    operation["security"] = []
                    continue
                responses = operation.setdefault("responses", {})
                content = error_content(schemas, path)
                responses.setdefault(
                    "401",
                    {"description": "Missing, wrong, expired or revoked credentials.",
                     "content": content},
                )  # fmt: skip
                responses.setdefault(
                    "403", {"description": f"The caller lacks the '{access}' role.",
                            "content": content},
                )  # fmt: skip
                if access == "admin":
                    text = operation.get("description", "")
                    operation["description"] = (text + "\n\n" if text else "") + (
                        "Requires the `admin` role."
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_auth(
    app: FastAPI, settings: Settings, metrics: ServerMetrics, redis: RedisBackend | None = None
) -> None:
    """Add the auth middleware (raises ConfigError for broken auth settings) and its OpenAPI."""
    policy = AccessPolicy.from_settings(settings.auth)
    authenticator = Authenticator.from_settings(settings, redis)
    app.add_middleware(
        AuthMiddleware,
        authenticator=authenticator,
        policy=policy,
        metrics=metrics,
    )
    install_openapi_security(app, policy)
