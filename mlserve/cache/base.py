"""What every prediction cache shares: the PredictionCache protocol and how an input is keyed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from mlserve.runtime.model import Prediction

__all__ = ["LONG_TEXT", "EvictionObserver", "PredictionCache", "input_key"]

EvictionObserver = Callable[[str], None]
LONG_TEXT = 256  # longer texts are keyed by a digest, so keys stay small


def input_key(row: Any) -> Hashable:
    """The normalized input: a prepared row is the exact text (str) or the feature values as
    floats in the model's feature order (list) — so {"a": 1, "b": 2}, [1, 2] and [1.0, 2.0]
    share one entry, and nothing from the request's headers or ids takes part."""
    if type(row) is str:
        if len(row) <= LONG_TEXT:
            return row
        return hashlib.blake2b(row.encode("utf-8", "surrogatepass"), digest_size=20).digest()
    return tuple(row)


class PredictionCache(Protocol):
    """What the server needs from a prediction cache: this process's LRU (memory.MemoryCache),
    or the Redis cache shared by replicas (redis.RedisPredictionCache), whose keys are
    namespaced by model and version, values serialized, the TTL the key's expiry and the size
    bound left to Redis's maxmemory policy. A cache is an optimisation: when its store is
    unreachable, get returns None (a miss) and set does nothing, never raising into the
    request. Plug one in as TrafficController.cache."""

    async def get(self, model: str, version: int, row: Any) -> Prediction | None:
        """The cached answer for a prepared row, or None."""
        ...

    async def set(self, model: str, version: int, row: Any, prediction: Prediction) -> None:
        """Remember the answer for a prepared row."""
        ...

    async def get_many(
        self, model: str, version: int, rows: Sequence[Any]
    ) -> list[Prediction | None]:
        """Cached answers for several rows (None where absent), in one round trip."""
        ...

    async def set_many(
        self, model: str, version: int, rows: Sequence[Any], predictions: Sequence[Prediction]
    ) -> None:
        """Remember the answers for several rows."""
        ...

    async def clear(self) -> None:
        """Forget every entry."""
        ...

    def __len__(self) -> int:
        """Entries held (an estimate is fine for a shared store)."""
        ...
