"""Prediction cache in this process: answers keyed on (model, version, prepared input), LRU
with a TTL."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from mlserve.cache.base import EvictionObserver, input_key
from mlserve.config import CacheSettings
from mlserve.runtime.model import Prediction

__all__ = ["MemoryCache"]


class MemoryCache:
    """A process-local LRU cache with a TTL and an entry bound.

    Runs on the event loop thread only (no lock). Expired entries are dropped when read;
    when the cache is full the least recently used entry goes (counted as an eviction)."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_evict: EvictionObserver | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self.on_evict = on_evict
        # Told the entry count when it changes (a gauge set explicitly also works in
        # prometheus multiprocess mode, where a callback gauge is never read).
        self.on_size = on_size
        # (model, version, input key) -> (expires at, prediction); oldest use first.
        self._entries: collections.OrderedDict[
            tuple[str, int, Hashable], tuple[float, Prediction]
        ] = collections.OrderedDict()

    @classmethod
    def from_settings(
        cls,
        settings: CacheSettings,
        *,
        on_evict: EvictionObserver | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> MemoryCache:
        return cls(
            max_entries=settings.max_entries,
            ttl_s=settings.ttl_s,
            on_evict=on_evict,
            on_size=on_size,
        )

    def _sized(self) -> None:
        if self.on_size is not None:
            self.on_size(len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: tuple[str, int, Hashable]) -> Prediction | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            self._sized()
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def _set(self, key: tuple[str, int, Hashable], prediction: Prediction) -> None:
        entries = self._entries
        entries[key] = (self.clock() + self.ttl_s, prediction)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            now = self.clock()
            while len(entries) > self.max_entries:
                (model, _, _), (expires, _) = entries.popitem(last=False)
                if self.on_evict is not None and expires > now:  # expired: not an eviction
                    self.on_evict(model)

    async def get(self, model: str, version: int, row: Any) -> Prediction | None:
        return self._get((model, version, input_key(row)))

    async def set(self, model: str, version: int, row: Any, prediction: Prediction) -> None:
        self._set((model, version, input_key(row)), prediction)
        self._sized()

    async def get_many(
        self, model: str, version: int, rows: Sequence[Any]
    ) -> list[Prediction | None]:
        return [self._get((model, version, input_key(row))) for row in rows]

    async def set_many(
        self, model: str, version: int, rows: Sequence[Any], predictions: Sequence[Prediction]
    ) -> None:
        for row, prediction in zip(rows, predictions, strict=True):
            self._set((model, version, input_key(row)), prediction)
        self._sized()

    async def clear(self) -> None:
        self._entries.clear()
        self._sized()
