"""The prediction paths' side of feedback: a bounded in-memory buffer, flushed to the store.

Prediction paths never wait for the store: they append to a list, and a background task writes
what accumulated every `flush_interval_s` in one transaction (in a worker thread for SQLite).
The buffer is bounded (`buffer_size`): beyond it predictions are dropped and counted, never
queued without limit. A feedback request first flushes the buffer, so it sees predictions
this process answered a moment ago; another process's are visible after its next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlserve.feedback.base import (
    BufferedBatch,
    Entry,
    FeedbackStore,
    FeedbackUnavailableError,
    row_count,
)

if TYPE_CHECKING:
    from mlserve.runtime.model import Prediction

__all__ = ["FeedbackRecorder"]

log = logging.getLogger(__name__)


class FeedbackRecorder:
    """The prediction paths' side: `record` appends to a bounded list (no I/O, no hashing);
    a background task hands what accumulated to the store every `flush_interval_s`.

    Bounded: with `buffer_size` predictions waiting, more are dropped and `on_drop(n)` is
    told. A flush that fails (store down) puts its batch back, within the bound, and is
    retried at the next interval."""

    def __init__(
        self,
        *,
        buffer_size: int = 100_000,
        flush_interval_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.on_drop = on_drop
        self.store: FeedbackStore | None = None  # attached once opened (in the lifespan)
        self.dropped = 0
        self._buffer: list[Entry] = []
        self._rows = 0  # predictions in the buffer (a batch entry holds several)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def __len__(self) -> int:
        """Predictions buffered."""
        return self._rows

    # ------------------------------------------------------------------ request path
    def record(
        self, request_id: str, model: str, version: int, row: Any, prediction: Prediction
    ) -> None:
        """Remember one answered prediction (never blocks, never raises)."""
        if self._rows >= self.buffer_size:
            self._drop(1)
            return
        self._rows += 1
        self._buffer.append(
            (
                request_id,
                model,
                version,
                row,
                prediction.label,
                prediction.confidence,
                self.clock(),
            )
        )

    def record_many(
        self,
        request_id: str,
        model: str,
        version: int,
        rows: Sequence[Any],
        predictions: Sequence[Prediction],
    ) -> None:
        """Remember the rows of a batch as `<request_id>-<index>`: one entry for the batch
        (the store packs its rows); rows beyond the buffer's room are dropped and counted."""
        room = self.buffer_size - self._rows
        n = len(rows)
        if room < n:
            self._drop(n - max(room, 0))
            if room <= 0:
                return
            rows, predictions = rows[:room], predictions[:room]
            n = room
        if n:
            self._rows += n
            self._buffer.append(
                BufferedBatch.of(request_id, model, version, rows, predictions, self.clock())
            )

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    # ------------------------------------------------------------------ flushing
    async def flush(self) -> int:
        """Write what is buffered now (and wait for a flush in progress); returns how many."""
        async with self._lock:
            store = self.store
            if store is None or not self._buffer:
                return 0
            batch, self._buffer = self._buffer, []
            rows, self._rows = self._rows, 0
            try:
                await store.add(batch)
            except (FeedbackUnavailableError, OSError, sqlite3.OperationalError) as exc:
                # The store is down, locked or out of space: keep the batch for the next try.
                self._requeue(batch)
                if not self._failing:
                    self._failing = True
                    log.error(
                        "cannot write predictions to the feedback store (kept and retried; "
                        "beyond feedback.buffer_size they are dropped): %s",
                        exc,
                    )
                raise
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except Exception:
                # Not the store's state but these records (a bug): retrying would fail forever.
                self._drop(rows)
                log.exception("dropped %d predictions the feedback store refused", rows)
                raise
            if self._failing:
                self._failing = False
                log.info("feedback store writes work again")
            return rows

    def _requeue(self, batch: list[Entry]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within the bound (the
        newest predictions are the ones kept; a batch entry may lose its first rows)."""
        merged = batch + self._buffer
        total = self._rows + row_count(batch)
        excess = total - self.buffer_size
        if excess > 0:
            self._drop(excess)
            total -= excess
            skip = 0
            while excess > 0:
                first = merged[skip]
                size = 1 if type(first) is tuple else len(first)
                if size <= excess:
                    skip += 1
                    excess -= size
                else:  # a batch entry: its newest rows stay
                    merged[skip] = first.tail(excess)  # type: ignore[union-attr]
                    excess = 0
            merged = merged[skip:]
        self._buffer = merged
        self._rows = total

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="feedback-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)  # the flush interval is a timer
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - flush() logged it (once per outage)
                log.debug("feedback flush failed, retried at the next interval: %s", exc)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the background task and write what is left (bounded by `timeout`)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._buffer and self.store is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except Exception as exc:  # noqa: BLE001 - shutting down: log, do not fail it
                log.warning("%d predictions not written to the feedback store: %s", self._rows, exc)
