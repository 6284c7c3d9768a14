"""API-key revocations shared through Redis: a key revoked anywhere is refused by every replica."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from mlserve.backends.redis import RedisBackend, is_connection_error
from mlserve.keys import REVOKED_HASH, KeyRecord, revocation_from_entry

log = logging.getLogger(__name__)

REFRESH_S = 1.0


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
        if not self.backend.available:
            return
        self._refreshing = True
        try:
            raw = await self.backend.client.hgetall(self.backend.key(REVOKED_HASH))
        except Exception as exc:  # noqa: BLE001 - keep what we had
            if is_connection_error(exc):
                self.backend.failed(exc)
            else:
                log.warning("cannot read the shared key revocations: %s", exc)
            return
        finally:
            self._refreshing = False
        revoked: dict[str, KeyRecord] = {}
        for digest, value in raw.items():
            text = digest.decode() if isinstance(digest, bytes) else str(digest)
            record = revocation_from_entry(text, value)
            if record is not None:
                revoked[record.sha256] = record
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
