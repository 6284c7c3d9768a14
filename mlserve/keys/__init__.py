"""API keys: records and hashing (base), the local key file store, and revocations shared
through Redis when redis.url is set (imported only then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.keys.base import (
    KEY_PREFIX,
    ROLES,
    KeyRecord,
    Role,
    hash_key,
    parse_expiry,
    records_from_settings,
)
from mlserve.keys.file import KeyStore, read_key_file

if TYPE_CHECKING:
    from mlserve.config import Settings

__all__ = [
    "KEY_PREFIX",
    "ROLES",
    "KeyRecord",
    "KeyStore",
    "Role",
    "hash_key",
    "parse_expiry",
    "read_key_file",
    "records_from_settings",
    "share_revocation",
    "shared_revocations",
]


def share_revocation(settings: Settings, record: KeyRecord) -> bool:
    """Record a revocation in Redis when `redis.url` is set, so every replica refuses the key
    within a second whatever key file or settings it reads. False when Redis is off;
    MlserveError when it is set but unreachable."""
    if settings.redis.url is None:
        return False
    from mlserve.keys.redis import record_revocation

    record_revocation(settings, record)
    return True


def shared_revocations(settings: Settings) -> dict[str, KeyRecord]:
    """The revocations recorded in Redis (sha256 -> record); {} when Redis is off."""
    if settings.redis.url is None:
        return {}
    from mlserve.keys.redis import read_revocations

    return read_revocations(settings)
