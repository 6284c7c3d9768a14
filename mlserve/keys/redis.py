"""API-key revocations shared through Redis: a key revoked anywhere is refused by every replica.

`mlserve keys revoke` writes the revocation to the hash `<prefix>revoked` (sha256 -> who the key
was) with a blocking client; each server reads that hash at most once a second.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlserve.backends.redis import (
    RedisBackend,
    RedisUnreachableError,
    display_url,
    redis_url,
    reply_text,
    sync_client,
)
from mlserve.errors import ConfigError, MlserveError
from mlserve.keys.base import KeyRecord

if TYPE_CHECKING:
    from mlserve.config import Settings

__all__ = [
    "REFRESH_S",
    "REVOKED_HASH",
    "RedisRevocationSource",
    "parse_revocations",
    "read_revocations",
    "record_revocation",
    "revocation_entry",
    "revocation_from_entry",
]

log = logging.getLogger(__name__)

REFRESH_S = 1.0
REVOKED_HASH = "revoked"  # under redis.key_prefix: sha256 -> {"name", "role", "revoked_at"}


# ---------------------------------------------------------------------------- entries
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


def parse_revocations(raw: Mapping[Any, Any]) -> dict[str, KeyRecord]:
    """The revocations hash as read (sha256 -> entry) as records; malformed entries are skipped."""
    out: dict[str, KeyRecord] = {}
    for digest, value in raw.items():
        record = revocation_from_entry(reply_text(digest), value)
        if record is not None:
            out[record.sha256] = record
    return out


# ---------------------------------------------------------------------------- commands
def _client(settings: Settings) -> tuple[Any, str]:
    url = redis_url(settings)
    if url is None:
        raise ConfigError("shared key revocations need redis.url (MLSERVE_REDIS__URL)")
    return sync_client(url, settings.redis), url


def record_revocation(settings: Settings, record: KeyRecord) -> None:
    """Record a revocation in Redis (redis.url), so every replica refuses the key within a
    second whatever key file or settings it reads. MlserveError when Redis is unreachable."""
    client, url = _client(settings)
    key = settings.redis.key_prefix + REVOKED_HASH
    try:
        with client:
            client.hset(key, record.sha256, revocation_entry(record))
    except Exception as exc:  # noqa: BLE001 - redis-py's errors, told to the user in one line
        raise MlserveError(
            f"cannot record the revocation of '{record.name}' in redis {display_url(url)} "
            f"({exc}); run the command again once Redis is reachable"
        ) from None


def read_revocations(settings: Settings) -> dict[str, KeyRecord]:
    """The revocations recorded in Redis (redis.url): sha256 -> record."""
    client, _ = _client(settings)
    with client:
        raw: dict[bytes, bytes] = client.hgetall(settings.redis.key_prefix + REVOKED_HASH)
    return parse_revocations(raw)


# ---------------------------------------------------------------------------- servers
class RedisRevocationSource:
    """A KeySource holding only revocations (`mlserve keys revoke` writes them to the hash
    `<prefix>revoked` when redis.url is set). The hash is read at most once per `refresh_s`, so
    a revocation reaches every replica within about a second, and a request costs no Redis
    round trip. While Redis is down the last revocations read are kept (a revoked key stays
    refused) and the local key file goes on answering for everything else."""

    def __init__(
        self,
        backend: RedisBackend,
        *,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.refresh_s = refresh_s
        self._clock = clock
        self.revoked: dict[str, KeyRecord] = {}
        self._read_at = float("-inf")
        self._refreshing = False

    async def refresh(self) -> None:
        now = self._clock()
        if self._refreshing or now - self._read_at < self.refresh_s:
            return
        self._read_at = now
        self._refreshing = True
        try:
            raw = await self.backend.call(
                self.backend.client.hgetall, self.backend.key(REVOKED_HASH)
            )
        except RedisUnreachableError:
            return  # keep what we had; the backend logs the outage once
        except Exception as exc:  # noqa: BLE001 - keep what we had
            log.warning("cannot read the shared key revocations: %s", exc)
            return
        finally:
            self._refreshing = False
        revoked = parse_revocations(raw)
        added = revoked.keys() - self.revoked.keys()
        if added:
            names = ", ".join(sorted(revoked[d].name for d in added))
            log.info("shared key revocations: %d new (%s)", len(added), names)
        self.revoked = revoked

    async def find(self, digest: str) -> Sequence[KeyRecord]:
        await self.refresh()
        record = self.revoked.get(digest)
        return [record] if record is not None else []

    async def has_keys(self) -> bool:
        return False  # revocations alone never turn auth on
