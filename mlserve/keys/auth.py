"""Who is calling: API keys (key file, settings, revocations shared through Redis) and
optional JWTs turned into a Principal, or refused with Unauthorized. No HTTP here: the server's
auth middleware reads the credential from the request and asks an Authenticator.

Auth is on when any key exists (the key file or `auth.keys`) or JWT is configured; once on it
stays on for the life of the process (revoking the last key must not open the server).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlserve.config import AuthSettings, Settings
from mlserve.errors import ConfigError, Unauthorized
from mlserve.keys.base import ROLES, KeyRecord, Role, hash_key, records_from_settings
from mlserve.keys.file import read_key_file

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend

__all__ = [
    "Access",
    "Authenticator",
    "FileKeySource",
    "JwtVerifier",
    "KeySource",
    "Principal",
    "StaticKeySource",
    "auth_configured",
    "jwt_configured",
]

log = logging.getLogger(__name__)

Access = Literal["open", "predict", "admin"]
PrincipalKind = Literal["api_key", "jwt"]
ROLE_RANK: dict[str | None, int] = {None: 0, "predict": 1, "admin": 2}
KEY_FILE_CHECK_S = 1.0
JWT_LEEWAY_S = 30
JWT_EXTRA = "pip install 'mlserve-sklearn[jwt]'"
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


# ---------------------------------------------------------------------------- key sources
class KeySource(Protocol):
    """Where API keys come from: the key file, settings, and (with redis.url) the revocations
    shared by replicas through Redis (mlserve.keys.redis)."""

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
            from mlserve.keys.redis import RedisRevocationSource

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
