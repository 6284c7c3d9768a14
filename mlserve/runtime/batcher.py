"""Adaptive batching: concurrent requests for one model version share one vectorized call.

Greedy by design: while the model is busy, requests queue; when it frees up, everything queued
(up to max_batch_size rows) goes in one call. A lone request never waits on a timer unless
max_wait_ms asks for fuller batches.

The model thread takes the next batch itself as soon as a call ends, and hands each call's
results to the event loop in one callback: the model keeps running back to back however long
the loop's turns are (under overload a turn may answer thousands of refusals), rather than
waiting two or three loop turns between calls.

When a model call fails, its requests are retried one at a time so one bad input fails only its
own caller; the failure is logged once per batch, and if the first two solo retries fail too the
model is taken to be broken and the rest of the batch fails without calling it again.

Admission is by latency budget: a cost model fitted to the recent model calls (seconds as a
fixed part plus a part per row, the time from one call's start to the next while work was
waiting, so the event loop's share counts too) predicts how long the work already queued takes;
a request that would wait longer than max_queue_delay_ms is refused at once (OverloadedError),
and max_queue stays a hard cap on the number of waiting requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from mlserve.errors import MlserveError, ModelUnavailableError, OverloadedError, PredictionError
from mlserve.runtime.breaker import CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")

BatchObserver = Callable[[int, float], None]
QueueObserver = Callable[[int], None]

# Solo retries of a failed batch that must all fail before the model (not one input) is blamed.
SOLO_RETRIES_BEFORE_GIVING_UP = 2
# Weight of the newest model call in the cost model (about the last 10 calls count).
COST_WEIGHT = 0.2
# Spread of batch sizes (standard deviation, rows) below which no part per row is estimated.
SPREAD_ROWS = 4.0
# Submissions whose row counts are remembered (recent_rows: the fewest of them).
RECENT_SUBMISSIONS = 16


class CallTracer(Protocol):
    """Told of every model call, to trace it (mlserve.server.tracing: one span per call)."""

    def context(self) -> object:
        """What identifies the caller, taken in its own context when its rows are queued."""

    def call(
        self,
        name: str,
        contexts: list[object],
        rows: int,
        started: float,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """A model call of `rows` rows for the callers whose `contexts` are given ended:
        it started at `started` (perf_counter) and took `seconds`; `error` if it raised."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 256
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    # Refuse a request expected to wait longer than this for the model (0: only max_queue).
    max_queue_delay_ms: float = 500.0
    # Traces each model call (tracing.enabled); None: nothing is traced, at no cost.
    tracer: CallTracer | None = None


class CallCost:
    """Seconds of one model call as `fixed + per_row * rows`, fitted by exponentially
    weighted least squares to the recent calls (the newest weighs COST_WEIGHT)."""

    __slots__ = ("_w", "_x", "_y", "_xx", "_xy", "fixed", "per_row")

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.fixed = self.per_row = 0.0

    @property
    def known(self) -> bool:
        return self._w > 0.0

    def observe(self, rows: int, seconds: float) -> None:
        keep = 1.0 - COST_WEIGHT
        self._w = self._w * keep + COST_WEIGHT
        self._x = self._x * keep + COST_WEIGHT * rows
        self._y = self._y * keep + COST_WEIGHT * seconds
        self._xx = self._xx * keep + COST_WEIGHT * rows * rows
        self._xy = self._xy * keep + COST_WEIGHT * rows * seconds
        mx, my = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mx * mx
        slope = (self._xy / self._w - mx * my) / var if var >= SPREAD_ROWS**2 else 0.0
        fixed = my - slope * mx
        if slope <= 0.0 or fixed < 0.0:
            # Sizes too alike to tell the parts apart (or noise): all of it per call. Taken
            # per row instead, calls of a row or two (light load, or a busy event loop) would
            # price a full batch so high that no larger batch is ever admitted to correct it.
            self.fixed, self.per_row = my, 0.0
        else:
            self.fixed, self.per_row = fixed, slope

    def seconds(self, calls: int, rows: int) -> float:
        return calls * self.fixed + rows * self.per_row


class _Item:
    __slots__ = ("rows", "future", "context")

    def __init__(
        self, rows: Sequence[Any], future: asyncio.Future[Any], context: object = None
    ) -> None:
        self.rows = rows
        self.future = future
        self.context = context  # the caller's, for a CallTracer


class Batcher(Generic[T]):
    """Queues prepared rows and feeds them to `predict` in batches on a worker thread."""

    def __init__(
        self,
        predict: Callable[[list[Any]], list[T]],
        *,
        config: BatchingConfig,
        name: str = "model",
        on_batch: BatchObserver | None = None,
        on_queue: QueueObserver | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._predict = predict
        self.config = config
        self.name = name
        self._on_batch = on_batch
        # Told the queue depth whenever it changes (a gauge set explicitly works in prometheus
        # multiprocess mode, where a callback gauge is never read).
        self._on_queue = on_queue
        # Consecutive failed model calls open it: new requests then fail fast (503).
        self.breaker = breaker
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        # Rows of the latest submissions, admitted or refused (recent_rows).
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_SUBMISSIONS)
        self.cost = CallCost()
        # The call on the model thread: its start (perf_counter) and rows; and the previous
        # call's, while the queue was not empty when it ended (its cost is then measured up
        # to the next call's start, event-loop turns included).
        self._call_started = 0.0
        self._call_rows = 0
        self._back_to_back: tuple[float, int] | None = None
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cancelled = False  # the run task was cancelled: the model thread takes no more
        # The queue is appended to on the event loop and taken from on the model thread.
        self._lock = threading.Lock()
        self._current: list[_Item] = []  # the batch on the model thread
        self.in_flight = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def expected_wait(self, rows: int = 1) -> float | None:
        """Seconds until a request of `rows` rows queued now would be answered, by the cost
        model: the rest of the running call plus the calls the queue ahead of it needs.
        None until a model call has been timed."""
        cost = self.cost
        if not cost.known:
            return None
        total = self._queued_rows + rows
        if self.config.enabled:
            calls = max(1, math.ceil(total / self.config.max_batch_size))
        else:
            calls = len(self._queue) + 1
        wait = cost.seconds(calls, total)
        if self.in_flight:
            running = cost.seconds(1, self._call_rows)
            wait += max(0.0, running - (time.perf_counter() - self._call_started))
        return wait

    def would_admit(self, rows: int = 1, *, ahead: int = 0) -> bool:
        """Whether a request of `rows` rows would be queued now (not refused as overloaded):
        callers may ask before reading a request's body, to refuse it for next to nothing.
        `ahead`: requests let in but not queued yet, counted as queued before it (each of
        recent_rows rows)."""
        return self._refusal(rows, ahead) is None

    @property
    def recent_rows(self) -> int:
        """The fewest rows among the latest RECENT_SUBMISSIONS submissions (1 before any):
        what a request of unknown size, not yet read, is judged by when it is likely to be a
        batch (ModelManager.saturated(batch=True))."""
        return min(self._recent, default=1)

    def _refusal(self, rows: int, ahead: int = 0) -> str | None:
        """Why a request of `rows` rows would be refused as overloaded, or None."""
        depth = len(self._queue)
        if depth >= self.config.max_queue:
            return f"model {self.name} has {depth} requests waiting (batching.max_queue)"
        budget = self.config.max_queue_delay_ms
        if budget <= 0 or (depth == 0 and not ahead):
            return None  # an empty queue always takes one request, however slow the model
        wait = self.expected_wait(rows + ahead * self.recent_rows if ahead else rows)
        if wait is None or wait * 1000.0 <= budget:
            return None
        return (
            f"model {self.name} would answer in about {wait * 1000.0:.0f} ms, over "
            f"batching.max_queue_delay_ms ({budget:.0f})"
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.name}"
            )

    async def submit(self, row: Any) -> T:
        """Predict one prepared row."""
        results = await self._enqueue([row])
        return results[0]

    async def submit_many(self, rows: Sequence[Any]) -> list[T]:
        """Predict several rows; they stay together in one model call."""
        if not rows:
            return []
        return await self._enqueue(rows)

    def _enqueue(self, rows: Sequence[Any]) -> asyncio.Future[list[T]]:
        """Queue `rows` (or raise at once): the future of their results. A plain function, so
        that a request waiting for the model holds one coroutine frame fewer (under overload
        thousands wait at once)."""
        if self._closing:
            raise ModelUnavailableError(f"model {self.name} is shutting down", retry_after=1)
        breaker = self.breaker
        if breaker is not None and breaker.opened_at is not None:
            breaker.check()  # raises ModelDegradedError, unless this call is the half-open probe
        self._recent.append(len(rows))
        refusal = self._refusal(len(rows))
        if refusal is not None:
            raise OverloadedError(f"{refusal}; retry shortly", retry_after=1)
        if self._task is None:
            self.start()
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        tracer = self.config.tracer
        item = _Item(rows, future, None if tracer is None else tracer.context())
        with self._lock:
            self._queue.append(item)
            self._queued_rows += len(rows)
        self._queue_changed()
        self._wakeup.set()
        return future

    def _queue_changed(self) -> None:
        if self._on_queue is None:
            return
        try:
            self._on_queue(len(self._queue))
        except Exception:
            # A metrics hook must never stop requests from being queued or answered.
            log.exception("queue observer of model %s failed", self.name)

    def _take_batch(self) -> list[_Item]:
        """Pop queued items up to max_batch_size rows (always at least one item, when any)."""
        with self._lock:
            batch = self._pop_batch()
        self._queue_changed()
        return batch

    def _pop_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        limit = self.config.max_batch_size if self.config.enabled else 1
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled: the client went away
                self._queue.popleft()
                self._queued_rows -= len(item.rows)
                continue
            if batch and (not self.config.enabled or rows + len(item.rows) > limit):
                break
            self._queue.popleft()
            self._queued_rows -= len(item.rows)
            batch.append(item)
            rows += len(item.rows)
            if rows >= limit:
                break
        return batch

    async def _fill_wait(self) -> None:
        """Opt-in extra wait for a fuller batch (batching.max_wait_ms)."""
        deadline = time.perf_counter() + self.config.max_wait_ms / 1000.0
        while True:
            queued = sum(len(i.rows) for i in self._queue)
            remaining = deadline - time.perf_counter()
            if queued >= self.config.max_batch_size or remaining <= 0 or self._closing:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.config.enabled and self.config.max_wait_ms > 0:
                await self._fill_wait()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                try:
                    failed = await loop.run_in_executor(self._executor, self._work, loop, batch)
                finally:
                    self.in_flight = 0
                if failed is not None:
                    await self._isolate(*failed)
            except asyncio.CancelledError:
                # Stopped mid-call (or mid-isolation): these callers are no longer queued, so
                # nothing else would ever answer them.
                self._cancelled = True
                stopped = ModelUnavailableError(f"model {self.name} stopped", retry_after=1)
                self._fail(batch, stopped)
                self._fail(self._current, stopped)
                raise

    def _work(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Item]
    ) -> tuple[list[_Item], Exception] | None:
        """On the model thread: predict `batch`, then the next queued ones back to back; each
        call's results go to the loop in one callback. Returns a failed batch (with its error),
        for the loop to isolate, or None once the queue is empty."""
        while True:
            self._current = batch
            rows = [row for item in batch for row in item.rows]
            started = time.perf_counter()
            self.in_flight = len(batch)
            self._call_started, self._call_rows = started, len(rows)
            try:
                results = self._predict(rows)
            except Exception as exc:  # noqa: BLE001 - the model's failure goes to its callers
                if self.config.tracer is not None:
                    self._trace(batch, len(rows), started, time.perf_counter() - started, exc)
                return batch, exc
            seconds = time.perf_counter() - started
            more = bool(self._queue)
            try:
                loop.call_soon_threadsafe(self._completed, batch, results, started, seconds, more)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return None
            if self._cancelled or (self.config.enabled and self.config.max_wait_ms > 0):
                return None  # a fill wait happens on the loop; a cancelled run takes no more
            batch = self._take_batch()
            if not batch:
                return None

    def _completed(
        self, batch: list[_Item], results: list[T], started: float, seconds: float, more: bool
    ) -> None:
        """On the loop: one model call's results to its callers; the cost model and metrics."""
        try:
            rows = sum(len(item.rows) for item in batch)
            previous = self._back_to_back
            if previous is not None:
                # The last call ended with work waiting: it took until this one's start.
                self.cost.observe(previous[1], started - previous[0])
                self._back_to_back = None
            self._observe(rows, seconds)
            if self.config.tracer is not None:
                self._trace(batch, rows, started, seconds, None)
            if more:
                self._back_to_back = (started, rows)
            else:
                self.cost.observe(rows, seconds)
            self._succeeded()
            self._deliver(batch, results)
        except Exception:
            # A bug around the model call (an observer, delivering results): this batch's
            # callers get the model-failure answer, and the model thread goes on with the rest.
            log.exception(
                "batcher of model %s failed on a batch of %d request(s)", self.name, len(batch)
            )
            self._fail(batch, PredictionError(f"model {self.name} failed to predict"))

    def _succeeded(self) -> None:
        breaker = self.breaker
        if breaker is not None and (breaker.failures or breaker.opened_at is not None):
            breaker.record_success()

    def _failed(self) -> None:
        """A model call failed (not an input it refused): count it; when that opens the
        breaker, the requests still queued fail fast too instead of waiting their turn."""
        breaker = self.breaker
        if breaker is None or not breaker.record_failure():
            return
        log.warning("model %s is degraded: %s", self.name, breaker.reason)
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        self._queue_changed()
        self._fail(queued, breaker.error())

    def _observe(self, rows: int, seconds: float) -> None:
        if self._on_batch is not None:
            self._on_batch(rows, seconds)

    def _trace(
        self,
        batch: list[_Item],
        rows: int,
        started: float,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        tracer = self.config.tracer
        if tracer is None:
            return
        contexts = [item.context for item in batch]
        try:
            tracer.call(self.name, contexts, rows, started, seconds, error)
        except Exception:
            # Tracing must never stop requests from being answered.
            log.exception("tracing a call of model %s failed", self.name)

    @staticmethod
    def _deliver(batch: list[_Item], results: list[T]) -> None:
        offset = 0
        for item in batch:
            n = len(item.rows)
            if not item.future.done():
                item.future.set_result(results[offset : offset + n])
            offset += n

    @staticmethod
    def _fail(batch: list[_Item], error: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    async def _isolate(self, batch: list[_Item], exc: Exception) -> None:
        """The model raised: retry each request alone so one poisoned input cannot fail the
        others that happened to share its batch. A predict function rejects an input by raising
        an MlserveError (passed to that caller as is); anything else is a model failure, logged
        here once for the batch with its traceback and answered with a PredictionError that
        reveals nothing. When the first solo retries all fail as well, the model is broken:
        the rest of the batch fails without being retried."""
        if isinstance(exc, MlserveError):
            log.info("model %s refused a batch of %d request(s): %s", self.name, len(batch), exc)
        else:
            log.error(
                "model %s failed on a batch of %d request(s): %s: %s",
                self.name,
                len(batch),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        error = PredictionError(f"model {self.name} failed to predict")

        def public(failure: Exception) -> Exception:
            # A refused input is the caller's fault: the model itself works.
            if isinstance(failure, MlserveError):
                self._succeeded()
                return failure
            self._failed()
            return error

        if len(batch) == 1:
            self._fail(batch, public(exc))
            return
        loop = asyncio.get_running_loop()
        retried = failed = skipped = 0
        for item in batch:
            if item.future.done():
                continue
            if self.breaker is not None and self.breaker.state == "open":
                item.future.set_exception(self.breaker.error())  # opened by an earlier item
                continue
            if failed == retried == SOLO_RETRIES_BEFORE_GIVING_UP:
                item.future.set_exception(error)  # the model, not one input, is failing
                skipped += 1
                continue
            retried += 1
            try:
                results = await loop.run_in_executor(self._executor, self._predict, list(item.rows))
            except Exception as item_exc:  # noqa: BLE001 - already logged once for this batch
                log.debug("model %s failed a retried request: %r", self.name, item_exc)
                failure = public(item_exc)
                if failure is error:
                    failed += 1
                if not item.future.done():
                    item.future.set_exception(failure)
            else:
                self._succeeded()
                if not item.future.done():
                    item.future.set_result(results)
        if skipped:
            log.debug(
                "model %s failed its first %d solo retries: %d request(s) failed without a retry",
                self.name,
                retried,
                skipped,
            )

    async def stop(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop accepting work; finish (drain=True) or fail what is queued; free the thread."""
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is not None:
            if not drain:
                self._drop_queue()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._drop_queue()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _drop_queue(self) -> None:
        """Fail every queued request (the batcher is stopping)."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        self._queue_changed()
        self._fail(queued, ModelUnavailableError(f"model {self.name} stopped"))
