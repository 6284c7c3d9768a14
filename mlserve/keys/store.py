"""API keys: the key file (hashes only, atomic writes, a file lock) and expiry parsing.

A key is shown once, when created; the file keeps its sha256 with name, role, creation and
expiry times, and a revocation time once revoked (revoked keys stay listed, for the record).
Keys are 256 random bits, so an unsalted sha256 is enough: nothing can be guessed from it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlserve.config import AuthSettings

if TYPE_CHECKING:
    from mlserve.config import Settings
from mlserve.errors import ConfigError, MlserveError, NotFoundError, UsageError
from mlserve.fsutil import atomic_write_json

Role = Literal["predict", "admin"]
KeyStatus = Literal["active", "expired", "revoked"]
ROLES: tuple[Role, ...] = ("predict", "admin")
KEY_PREFIX = "mls_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
FILE_VERSION = 1
LOCK_TIMEOUT_S = 30.0
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def hash_key(key: str) -> str:
    """The sha256 (hex) stored for a key, and what settings-based deployments list."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC time; a naive time (e.g. from a settings file) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def validate_key_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid key name '{name}': use letters, digits, '.', '_', '@' or '-' "
            "(up to 64, starting with a letter or digit)"
        )
    return name


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime | None:
    """`30d`, `12h`, `90m`, `45s`, `2w` from now; a date `2026-12-31` (the key expires at
    00:00 UTC that day); an ISO time `2026-12-31T18:00:00Z`; or `never` (None)."""
    now = as_utc(now or datetime.now(UTC))
    spec = text.strip().lower()
    if spec in ("never", "none"):
        return None
    match = _DURATION_RE.fullmatch(spec)
    if match:
        amount = int(match[1])
        if amount <= 0:
            raise UsageError(f"invalid expiry '{text}': the duration must be positive")
        try:
            return now + timedelta(**{_UNITS[match[2]]: amount})
        except OverflowError:
            raise UsageError(f"invalid expiry '{text}': too far in the future") from None
    moment: datetime | None = None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", spec):
            moment = datetime.combine(date.fromisoformat(spec), datetime.min.time(), UTC)
        else:
            moment = as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        moment = None
    if moment is None:
        raise UsageError(
            f"invalid expiry '{text}': use a duration like 30d, 12h or 90m, "
            "a date like 2026-12-31, or 'never'"
        )
    if moment <= now:
        raise UsageError(f"invalid expiry '{text}': that time has already passed")
    return moment


class KeyRecord(BaseModel):
    """One key as stored: never the key itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    source: Literal["file", "settings", "redis"] = Field(default="file", exclude=True)

    @field_validator("created_at", "expires_at", "revoked_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= as_utc(now or datetime.now(UTC)):
            return "expired"
        return "active"

    @property
    def fingerprint(self) -> str:
        """A short prefix of the hash, enough to tell keys apart in a listing."""
        return self.sha256[:8]


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = FILE_VERSION
    keys: list[KeyRecord] = Field(default_factory=list)


class CreatedKey(BaseModel):
    """The result of `create`: the plaintext key, shown to the user once, and its record."""

    model_config = ConfigDict(frozen=True)

    key: str
    record: KeyRecord


def read_key_file(path: Path) -> list[KeyRecord]:
    """The records in a key file; [] when it does not exist. ConfigError when unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"key file {path} cannot be read: {exc.strerror}") from None
    try:
        return _KeyFile.model_validate(json.loads(raw)).keys
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "invalid JSON"
        raise ConfigError(f"key file {path} is not a valid mlserve key file ({detail})") from None


def records_from_settings(auth: AuthSettings) -> list[KeyRecord]:
    """The keys given as hashes in settings (`auth.keys`)."""
    return [
        KeyRecord(
            name=entry.name,
            role=entry.role,
            sha256=entry.sha256,
            expires_at=entry.expires_at,
            source="settings",
        )
        for entry in auth.keys
    ]


class KeyStore:
    """The key file named by the `auth.keys_file` setting; writers serialised by a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)
        try:
            with lock:
                yield
        except Timeout:
            raise ConfigError(
                f"key file {self.path} is locked by another writer (waited {LOCK_TIMEOUT_S:.0f} s)"
            ) from None

    def _write(self, records: list[KeyRecord]) -> None:
        data = _KeyFile(keys=records).model_dump(mode="json")
        atomic_write_json(self.path, data)

    def list(self) -> list[KeyRecord]:
        """Every stored key, revoked and expired ones included, oldest first."""
        return read_key_file(self.path)

    def create(
        self,
        *,
        role: Role,
        name: str | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> CreatedKey:
        """Store a new key's hash; the returned plaintext key is never stored or shown again."""
        if role not in ROLES:
            raise UsageError(f"invalid role '{role}': use predict or admin")
        now = as_utc(now or datetime.now(UTC))
        if expires_at is not None and as_utc(expires_at) <= now:
            raise UsageError("the expiry time has already passed")
        key = generate_key()
        with self._locked():
            records = self.list()
            active = {r.name for r in records if r.status(now) == "active"}
            if name is None:
                name = _free_name(role, {r.name for r in records})
            validate_key_name(name)
            if name in active:
                raise UsageError(
                    f"an active key named '{name}' already exists; "
                    f"revoke it first (mlserve keys revoke {name}) or pick another --name"
                )
            record = KeyRecord(
                name=name, role=role, sha256=hash_key(key), created_at=now, expires_at=expires_at
            )
            self._write([*records, record])
        return CreatedKey(key=key, record=record)

    def revoke(self, name: str, *, now: datetime | None = None) -> KeyRecord:
        """Mark the active key `name` revoked (servers refuse it within about a second)."""
        now = as_utc(now or datetime.now(UTC))
        with self._locked():
            records = self.list()
            for i, record in enumerate(records):
                if record.name == name and record.status(now) == "active":
                    revoked = record.model_copy(update={"revoked_at": now})
                    records[i] = revoked
                    self._write(records)
                    return revoked
        known = [r for r in records if r.name == name]
        if known:
            raise NotFoundError(f"key '{name}' is already {known[-1].status(now)}")
        raise NotFoundError(f"no key named '{name}' in {self.path}")


def _free_name(role: str, taken: set[str]) -> str:
    while True:
        candidate = f"{role}-{secrets.token_hex(3)}"
        if candidate not in taken:
            return candidate


# ---------------------------------------------------------------------------- shared revocations
REVOKED_HASH = "revoked"  # under redis.key_prefix: sha256 -> {"name", "role", "revoked_at"}


def revocation_entry(record: KeyRecord) -> bytes:
    """The value stored in Redis for a revoked key (never the key, only who it was)."""
    revoked = record.revoked_at or datetime.now(UTC)
    return json.dumps(
        {"name": record.name, "role": record.role, "revoked_at": revoked.isoformat()}
    ).encode()


def revocation_from_entry(sha256: str, raw: bytes | str) -> KeyRecord | None:
    """The KeyRecord for one entry of the shared revocations; None for a malformed entry."""
    try:
        data = json.loads(raw)
        return KeyRecord(
            name=data["name"],
            role=data["role"],
            sha256=sha256,
            revoked_at=datetime.fromisoformat(data["revoked_at"]),
            source="redis",
        )
    except (ValueError, KeyError, TypeError):
        return None


def _redis(settings: Settings) -> Any:
    from mlserve.backends.redis import redis_url, sync_client

    url = redis_url(settings)
    if url is None:
        return None
    return sync_client(url, settings.redis)


def share_revocation(settings: Settings, record: KeyRecord) -> bool:
    """Record a revocation in Redis when `redis.url` is set, so every replica refuses the key
    within a second whatever key file or settings it reads. False when Redis is off;
    MlserveError when it is set but unreachable."""
    client = _redis(settings)
    if client is None:
        return False
    from mlserve.backends.redis import display_url, redis_url

    key = settings.redis.key_prefix + REVOKED_HASH
    try:
        with client:
            client.hset(key, record.sha256, revocation_entry(record))
    except Exception as exc:  # noqa: BLE001 - redis-py's errors, told to the user in one line
        where = display_url(redis_url(settings) or "")
        raise MlserveError(
            f"cannot record the revocation of '{record.name}' in redis {where} ({exc}); "
            "run the command again once Redis is reachable"
        ) from None
    return True


def shared_revocations(settings: Settings) -> dict[str, KeyRecord]:
    """The revocations recorded in Redis (sha256 -> record); {} when Redis is off."""
    client = _redis(settings)
    if client is None:
        return {}
    with client:
        raw: dict[bytes, bytes] = client.hgetall(settings.redis.key_prefix + REVOKED_HASH)
    out: dict[str, KeyRecord] = {}
    for digest, value in raw.items():
        record = revocation_from_entry(digest.decode(), value)
        if record is not None:
            out[record.sha256] = record
    return out
