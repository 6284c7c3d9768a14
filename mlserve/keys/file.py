"""The key file (`auth.keys_file`): key hashes only, atomic writes, writers serialised by a
file lock."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlserve.errors import ConfigError, NotFoundError, UsageError
from mlserve.fsutil import atomic_write_json
from mlserve.keys.base import (
    ROLES,
    KeyRecord,
    Role,
    as_utc,
    generate_key,
    hash_key,
    validate_key_name,
)

__all__ = ["FILE_VERSION", "LOCK_TIMEOUT_S", "CreatedKey", "KeyStore", "read_key_file"]

FILE_VERSION = 1
LOCK_TIMEOUT_S = 30.0


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
