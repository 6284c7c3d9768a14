"""API keys: roles, the stored record (never the key itself), hashing and expiry parsing.

A key is shown once, when created; what is kept is its sha256 with name, role, creation and
expiry times, and a revocation time once revoked (revoked keys stay listed, for the record).
Keys are 256 random bits, so an unsalted sha256 is enough: nothing can be guessed from it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlserve.config import AuthSettings
from mlserve.errors import UsageError

__all__ = [
    "KEY_PREFIX",
    "ROLES",
    "KeyRecord",
    "KeyStatus",
    "Role",
    "as_utc",
    "generate_key",
    "hash_key",
    "parse_expiry",
    "records_from_settings",
    "validate_key_name",
]

Role = Literal["predict", "admin"]
KeyStatus = Literal["active", "expired", "revoked"]
ROLES: tuple[Role, ...] = ("predict", "admin")
KEY_PREFIX = "mls_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
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
