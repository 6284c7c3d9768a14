"""The prediction cache shared by every replica: entries in Redis with a TTL.

Keys are `<prefix>cache:v1:<model>:<version>:<digest of the prepared input>` (a new model
version never sees another version's answers); values are the Prediction as JSON, written with
SET ... PX so Redis drops them after `cache.ttl_s`. There is no entry count to enforce across
replicas: the cache is bounded by the TTL and by Redis's `maxmemory` with its eviction policy
(`volatile-ttl` or `volatile-lru` let Redis drop cache entries under memory pressure and never
the job data, which has no TTL until a job finishes; under `noeviction` a full Redis refuses
cache writes and predictions go on uncached). Evictions then happen inside Redis (see its
`INFO stats` `evicted_keys`), not in this process, so `mlserve_cache_evictions_total` stays 0.

Whenever Redis is unreachable the cache is bypassed: every lookup is a miss and nothing is
written, so predictions never wait for or fail because of Redis.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from mlserve.backends.redis import RedisBackend, RedisUnreachableError
from mlserve.config import CacheSettings
from mlserve.runtime.model import Prediction

__all__ = ["FORMAT", "RedisPredictionCache", "decode", "encode", "input_digest"]

log = logging.getLogger(__name__)

FORMAT = "v1"
SCAN_BATCH = 1000


def input_digest(row: Any) -> str:
    """A digest of a prepared row that is the same in every process: the exact text, or the
    feature values as IEEE doubles in the model's order (so 1, 1.0 and a feature given by
    name all share one entry; -0.0 counts as 0.0, every missing value as the same NaN)."""
    if type(row) is str:
        data = b"t\x00" + row.encode("utf-8", "surrogatepass")
    elif all(type(v) is float or type(v) is int for v in row):
        values = [math.nan if math.isnan(v) else float(v) + 0.0 for v in row]
        data = b"f\x00" + struct.pack(f"<{len(values)}d", *values)
    else:  # a typed row (DataFrame models): its JSON, each value's type being its column's
        data = b"j\x00" + orjson.dumps(list(row))
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def encode(prediction: Prediction) -> bytes:
    fields: list[Any] = [prediction.label, prediction.confidence, prediction.probabilities]
    if prediction.scores is not None:
        fields.append(prediction.scores)
    return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(raw: bytes | str) -> Prediction | None:
    try:
        label, confidence, probabilities, *rest = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # not ours, or another format: a miss
    scores = rest[0] if rest else None
    return Prediction(
        label=label, confidence=confidence, probabilities=probabilities, scores=scores
    )


class RedisPredictionCache:
    """PredictionCache on Redis, shared by every replica (see the module docstring)."""

    def __init__(self, backend: RedisBackend, *, ttl_s: float) -> None:
        self.backend = backend
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._errors_logged = False

    @classmethod
    def from_settings(cls, settings: CacheSettings, backend: RedisBackend) -> RedisPredictionCache:
        return cls(backend, ttl_s=settings.ttl_s)

    def _key(self, model: str, version: int, row: Any) -> str:
        return self.backend.key("cache", FORMAT, model, version, input_digest(row))

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn's answer, or None when Redis cannot give one: a cache never fails a prediction
        (a failed read is a miss, a failed write only costs a later miss)."""
        try:
            return await self.backend.call(fn, *args, **kwargs)
        except RedisUnreachableError:
            return None  # the backend logs it, once per outage
        except Exception as exc:  # noqa: BLE001 - whatever Redis answered, predictions go on
            if not self._errors_logged:
                # Redis answered but refused (e.g. OOM under maxmemory-policy noeviction).
                self._errors_logged = True
                log.warning("prediction cache: redis refused a command (%s); bypassing it", exc)
            return None

    async def get(self, model: str, version: int, row: Any) -> Prediction | None:
        raw = await self._call(self.backend.client.get, self._key(model, version, row))
        return decode(raw) if raw is not None else None

    async def set(self, model: str, version: int, row: Any, prediction: Prediction) -> None:
        await self._call(
            self.backend.client.set,
            self._key(model, version, row),
            encode(prediction),
            px=self.ttl_ms,
        )

    async def get_many(
        self, model: str, version: int, rows: Sequence[Any]
    ) -> list[Prediction | None]:
        if not rows or not self.backend.available:
            return [None] * len(rows)
        raws = await self._call(
            self.backend.client.mget, [self._key(model, version, row) for row in rows]
        )
        if raws is None:
            return [None] * len(rows)
        return [decode(raw) if raw is not None else None for raw in raws]

    async def set_many(
        self, model: str, version: int, rows: Sequence[Any], predictions: Sequence[Prediction]
    ) -> None:
        if not rows or not self.backend.available:
            return

        async def write() -> None:
            async with self.backend.client.pipeline(transaction=False) as pipe:
                for row, prediction in zip(rows, predictions, strict=True):
                    pipe.set(self._key(model, version, row), encode(prediction), px=self.ttl_ms)
                await pipe.execute()

        await self._call(write)

    async def clear(self) -> None:
        """Forget every cached prediction of this deployment (its key prefix)."""
        client = self.backend.client

        async def unlink_all() -> None:
            batch: list[Any] = []
            async for key in client.scan_iter(match=self.backend.key("cache", "*"), count=1000):
                batch.append(key)
                if len(batch) >= SCAN_BATCH:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)

        await self._call(unlink_all)

    def __len__(self) -> int:
        """Entries held in this process: none (they live in Redis; count them there)."""
        return 0
