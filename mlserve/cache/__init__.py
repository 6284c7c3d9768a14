"""Prediction caches: the protocol (base), this process's LRU (memory), the Redis cache shared
by replicas, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlserve.cache.base import LONG_TEXT, EvictionObserver, PredictionCache, input_key

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import CacheSettings

__all__ = ["LONG_TEXT", "EvictionObserver", "PredictionCache", "input_key", "make_prediction_cache"]


def make_prediction_cache(
    settings: CacheSettings,
    *,
    redis: RedisBackend | None = None,
    on_evict: EvictionObserver | None = None,
    on_size: Callable[[int], None] | None = None,
) -> PredictionCache:
    """The prediction cache for these settings: in Redis, shared by every replica, when there
    is a Redis backend (redis.url); else this process's LRU, which tells `on_evict(model)` of
    each eviction and `on_size(n)` of its entry count."""
    if redis is not None:
        from mlserve.cache.redis import RedisPredictionCache

        return RedisPredictionCache.from_settings(settings, redis)
    from mlserve.cache.memory import MemoryCache

    return MemoryCache.from_settings(settings, on_evict=on_evict, on_size=on_size)
