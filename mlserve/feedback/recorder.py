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

from mlserve.feedback.base import Buffered, FeedbackStore, FeedbackUnavailableError

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
        self._buffer: list[Buffered] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def __len__(self) -> int:
        return len(self._buffer)

    # ------------------------------------------------------------------ request path
    def record(
        self, request_id: str, model: str, version: int, row: Any, prediction: Prediction
    ) -> None:
        """Remember one answered prediction (never blocks, never raises)."""
        buffer = self._buffer
        if len(buffer) >= self.buffer_size:
            self._drop(1)
            return
        buffer.append(
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
        """Remember the rows of a batch as `<request_id>-<index>`."""
        buffer = self._buffer
        room = self.buffer_size - len(buffer)
        if room < len(rows):
            self._drop(len(rows) - max(room, 0))
        now = self.clock()
        for i, (row, prediction) in enumerate(zip(rows[: max(room, 0)], predictions, strict=False)):
            buffer.append(
                (
                    f"{request_id}-{i}",
                    model,
                    version,
                    row,
                    prediction.label,
                    prediction.confidence,
                    now,
                )
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
                self._drop(len(batch))
                log.exception("dropped %d predictions the feedback store refused", len(batch))
                raise
            if self._failing:
                self._failing = False
                log.info("feedback store writes work again")
            return len(batch)

    def _requeue(self, batch: list[Buffered]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within the bound (the
        newest predictions are the ones kept)."""
        merged = batch + self._buffer
        excess = len(merged) - self.buffer_size
        if excess > 0:
            self._drop(excess)
            merged = merged[excess:]
        self._buffer = merged

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
                log.warning(
                    "%d predictions not written to the feedback store: %s", len(self._buffer), exc
                )
