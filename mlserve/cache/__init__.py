"""Prediction caches: the protocol, this process's LRU, and the Redis cache shared by replicas."""

from __future__ import annotations

from mlserve.cache.memory import MemoryCache, PredictionCache, input_key

__all__ = ["MemoryCache", "PredictionCache", "input_key"]
