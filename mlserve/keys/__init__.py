"""API keys: hashing, the local key file store, expiry, and revocations shared through Redis."""

from __future__ import annotations

from mlserve.keys.store import (
    KEY_PREFIX,
    REVOKED_HASH,
    ROLES,
    KeyRecord,
    KeyStore,
    Role,
    hash_key,
    parse_expiry,
    read_key_file,
    records_from_settings,
    revocation_entry,
    revocation_from_entry,
    share_revocation,
    shared_revocations,
)

__all__ = [
    "KEY_PREFIX",
    "REVOKED_HASH",
    "ROLES",
    "KeyRecord",
    "KeyStore",
    "Role",
    "hash_key",
    "parse_expiry",
    "read_key_file",
    "records_from_settings",
    "revocation_entry",
    "revocation_from_entry",
    "share_revocation",
    "shared_revocations",
]
