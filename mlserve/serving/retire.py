"""Retiring runtimes (swapped out, unloaded, evicted): each stops once no request holds it, at
the latest when its grace period ends, and the heap memory its model freed goes back to the OS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from mlserve.runtime.batcher import Batcher
from mlserve.runtime.heap import HeapTrim
from mlserve.runtime.model import Prediction
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.runtimes import Runtime

log = logging.getLogger(__name__)

# Runtimes drained this close together share one heap trim (under churn, a hundred models may
# be unloaded per second; one malloc_trim walks every arena).
TRIM_DELAY_S = 0.2


class Retirements:
    """The runtimes of one manager that are stopping, and the heap trims after them.

    A retired runtime is out of every lookup, so only a request that picked it before (and
    still holds it) can send it work: it stops as soon as its last holder lets go (a weak
    reference tells), or when its grace period ends if one holds it longer. Waiting out the
    whole grace instead kept every unloaded model's memory alive for it: under churn (90
    loads a second, bench/memory_churn.py) 45 to 60 unloaded models beyond the 26 that a
    25 MB budget holds. Once stopped, its model's arrays are freed, and `trim` (glibc's
    malloc_trim; None: never) hands the free pages back."""

    def __init__(self, metrics: ServerMetrics, *, trim: HeapTrim | None) -> None:
        self.metrics = metrics
        self.trim = trim
        self.closing = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Event] = set()  # released early by close()
        self._trim_handle: asyncio.TimerHandle | None = None
        self._trimming: asyncio.Future[object] | None = None

    def retire(self, runtime: Runtime, grace_s: float) -> None:
        """Stop `runtime` in the background once nobody holds it or after `grace_s`."""
        if runtime.retired:
            return
        runtime.retired = True
        loop = asyncio.get_running_loop()
        released = asyncio.Event()

        def let_go() -> None:  # refers to nothing of the runtime: it must be free to go
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(released.set)

        watch = weakref.finalize(runtime, let_go)
        watch.atexit = False
        self._waiting.add(released)
        if self.closing:
            released.set()
        labels = (runtime.model.name, str(runtime.version))
        stop = self._stop(runtime.batcher, labels, runtime.estimated_bytes, released, grace_s)
        task = loop.create_task(stop)
        self.tasks.add(task)
        task.add_done_callback(lambda _t: watch.detach())  # held past its stop: nothing to do
        task.add_done_callback(self._stopped)

    async def _stop(
        self,
        batcher: Batcher[Prediction],
        labels: tuple[str, str],
        estimated: int,
        released: asyncio.Event,
        grace_s: float,
    ) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), grace_s)
        finally:
            self._waiting.discard(released)
        await batcher.stop(drain=True)
        self.metrics.models_loaded.dec()
        self.metrics.models_estimated_bytes.dec(estimated)
        breaker = batcher.breaker
        if breaker is not None and breaker.tripped:  # not serving any more: no alert for it
            self.metrics.model_degraded.labels(*labels).set(0)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """A runtime stopped (its coroutine's frame, the last holder of its batcher and model,
        is gone): trim the heap soon, once for every runtime stopped meanwhile."""
        self.tasks.discard(task)
        if self.trim is None or self.closing or self._trim_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._trim_handle = loop.call_later(TRIM_DELAY_S, self._start_trim, loop)

    def _start_trim(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim_handle = None
        trim = self.trim
        if trim is None or self.closing:
            return
        if self._trimming is not None:  # one is running: trim again after it, for these
            self._trim_handle = loop.call_later(TRIM_DELAY_S, self._start_trim, loop)
            return
        # On a worker thread: the walk of every arena must not hold up the event loop.
        self._trimming = loop.run_in_executor(None, trim)
        self._trimming.add_done_callback(self._trimmed)

    def _trimmed(self, future: asyncio.Future[object]) -> None:
        self._trimming = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("cannot trim the heap: %r", future.exception())

    async def close(self) -> None:
        """Stop every retiring runtime now (no grace) and wait for them and a running trim."""
        self.closing = True
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        for released in list(self._waiting):
            released.set()
        pending: list[asyncio.Future[object] | asyncio.Task[None]] = [*self.tasks]
        if self._trimming is not None:
            pending.append(self._trimming)
        await asyncio.gather(*pending, return_exceptions=True)
