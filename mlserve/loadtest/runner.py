"""Drive one process's share of the load (Engine) on its own event loop; the preflight request."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from mlserve.loadtest.engines import make_client
from mlserve.loadtest.options import LATE_AFTER_S, MAX_DURATION_S, MAX_REQUESTS, LoadtestError
from mlserve.loadtest.plan import LoadPlan, Target
from mlserve.loadtest.recorder import HttpEngine, Recorder
from mlserve.loadtest.stats import RunResult

__all__ = ["Engine", "Progress", "ProgressFn", "preflight", "run_engine"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """A live snapshot: counts so far and the latencies recorded since the previous one."""

    elapsed: float
    phase: Literal["warmup", "measure", "drain"]
    done: int
    errors: int
    window: array[float]


ProgressFn = Callable[[Progress], None]


class Engine:
    """Drives one process's share of the load; every loop stops on time and on count."""

    def __init__(
        self,
        target: Target,
        plan: LoadPlan,
        *,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress_every: float = 0.25,
    ) -> None:
        self.target = target
        self.plan = plan
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.progress_every = progress_every
        self.rec = Recorder()
        self.warm = Recorder()
        self.stopping = False
        self.claimed = 0
        self.limit = plan.requests if plan.requests is not None else MAX_REQUESTS
        self.start = 0.0
        self.measure_start = 0.0
        self.end = 0.0
        self.late = 0
        self.dropped = 0
        self.max_lag = 0.0
        self.in_flight = 0
        self._slot_freed: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported = 0

    def stop(self) -> None:
        self.stopping = True
        if self._slot_freed is not None and not self._slot_freed.done():
            self._slot_freed.set_result(None)

    async def run(self) -> RunResult:
        plan = self.plan
        client = make_client(self.target, plan)
        try:
            if plan.start_at is not None:
                await asyncio.sleep(max(0.0, plan.start_at - time.perf_counter()))
            self.start = time.perf_counter()
            self.measure_start = self.start + plan.warmup
            # --requests alone still stops at the hard cap on time.
            run_for = plan.duration if plan.duration is not None else MAX_DURATION_S
            self.end = self.measure_start + min(run_for, MAX_DURATION_S)
            ticker = asyncio.get_running_loop().create_task(self._tick())
            try:
                if plan.open_loop:
                    await self._open_loop(client)
                else:
                    n_bodies = len(self.target.bodies)
                    stride = plan.slot_stride
                    await asyncio.gather(
                        *(
                            self._closed_worker(client, (plan.slot_index + i * stride) % n_bodies)
                            for i in range(plan.concurrency)
                        )
                    )
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            self._report_progress("drain")
        finally:
            await client.aclose()
        return self._result()

    def _result(self) -> RunResult:
        rec = self.rec
        # A share that sent nothing has an empty window (it must not widen a merged one).
        ended = rec.last_end if rec.last_end > 0 else self.measure_start
        return RunResult(
            latencies_ms=rec.lat,
            server_ms=rec.srv,
            status_codes=dict(rec.codes),
            transport_errors=dict(rec.failures),
            error_samples=list(rec.samples),
            started=self.measure_start,
            ended=max(ended, self.measure_start),
            bytes_in=rec.bytes_in,
            bytes_out=rec.bytes_out,
            late=self.late,
            dropped=self.dropped,
            max_lag_ms=self.max_lag * 1000.0,
            interrupted=self.stopping,
        )

    async def _closed_worker(self, client: HttpEngine, index: int) -> None:
        pc = time.perf_counter
        fire = client.fire
        n = len(self.target.bodies)
        step = self.plan.slot_stride * self.plan.concurrency
        rec, warm = self.rec, self.warm
        measure_start, end = self.measure_start, self.end
        while not self.stopping:
            now = pc()
            if now >= end:
                return
            if now >= measure_start:
                if self.claimed >= self.limit:
                    return
                self.claimed += 1
                await fire(index, now, rec)
            else:
                await fire(index, now, warm)
            index = (index + step) % n

    async def _open_loop(self, client: HttpEngine) -> None:
        plan = self.plan
        rate = plan.rate or 1.0
        loop = asyncio.get_running_loop()
        pc = time.perf_counter
        interval = plan.slot_stride / rate
        # This process takes slot k of every `stride` slots of the global schedule.
        first = self.start + plan.slot_index / rate
        warm_slots = math.ceil(max(0.0, self.measure_start - first) / interval)
        n_bodies = len(self.target.bodies)
        cap = plan.max_in_flight
        i = 0
        while not self.stopping:
            scheduled = first + i * interval
            measured = i >= warm_slots
            if scheduled >= self.end or (measured and self.claimed >= self.limit):
                break
            now = pc()
            if now >= self.end:
                # The window is over: slots still waiting for a free one are never sent (and
                # counted as dropped below), so an overloaded target cannot stretch the run.
                break
            if scheduled > now:
                wait = scheduled - now
                # Timers are coarse (about 1 ms): sleep most of the way, then yield until due.
                await asyncio.sleep(wait - 0.001 if wait > 0.002 else 0)
                continue
            if self.in_flight >= cap:
                self._slot_freed = loop.create_future()
                await self._slot_freed
                self._slot_freed = None
                continue
            lag = now - scheduled
            if measured:
                self.claimed += 1
                if lag > LATE_AFTER_S:
                    self.late += 1
                self.max_lag = max(self.max_lag, lag)
            self.in_flight += 1
            task = loop.create_task(
                self._open_one(
                    client,
                    (plan.slot_index + i * plan.slot_stride) % n_bodies,
                    scheduled,
                    self.rec if measured else self.warm,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1
        if not self.stopping:
            # Measured slots of the schedule that were never sent (stuck at the cap).
            if plan.requests is not None:
                planned = plan.requests
            else:
                planned = math.ceil(max(0.0, self.end - first) / interval) - warm_slots
            self.dropped = max(0, planned - self.claimed)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _open_one(
        self, client: HttpEngine, index: int, scheduled: float, rec: Recorder
    ) -> None:
        try:
            # Latency counts from the scheduled start: waiting for a slot is part of it.
            await client.fire(index, scheduled, rec)
        finally:
            self.in_flight -= 1
            freed = self._slot_freed
            if freed is not None and not freed.done():
                freed.set_result(None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            if self.should_stop is not None and not self.stopping and self.should_stop():
                self.stop()
            now = time.perf_counter()
            self._report_progress("warmup" if now < self.measure_start else "measure")

    def _report_progress(self, phase: Literal["warmup", "measure", "drain"]) -> None:
        if self.on_progress is None:
            return
        lat = self.rec.lat
        window = lat[self._reported :]
        self._reported = len(lat)
        self.on_progress(
            Progress(
                elapsed=time.perf_counter() - self.start,
                phase=phase,
                done=self.rec.done,
                errors=self.rec.errors,
                window=window,
            )
        )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX (not Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_engine(
    target: Target,
    plan: LoadPlan,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Run one engine in this process; Ctrl-C stops sending and keeps what was measured."""
    engine = Engine(target, plan, on_progress=on_progress, should_stop=should_stop)

    async def main() -> RunResult:
        loop = asyncio.get_running_loop()
        installed = False
        previous = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGINT, engine.stop)
                installed = True
        try:
            return await engine.run()
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)
                # asyncio resets SIGINT to Python's default; a caller that ignored it or had
                # its own handler (an embedding application, a test worker) gets it back.
                if previous is not None:
                    signal.signal(signal.SIGINT, previous)

    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        return runner.run(main())


async def _preflight(target: Target, plan: LoadPlan) -> tuple[str | None, int | None]:
    client = make_client(target, replace(plan, concurrency=1, max_in_flight=1))
    rec = Recorder()
    try:
        await client.fire(0, time.perf_counter(), rec)
    finally:
        await client.aclose()
    if rec.failures:
        return next(iter(rec.failures)), None
    return None, next(iter(rec.codes))


def preflight(target: Target, plan: LoadPlan) -> int:
    """Send one request first: an unreachable target is an error, not a report of errors."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        failure, status = runner.run(_preflight(target, plan))
    if failure is not None:
        hint = " (is the server running?)" if failure == "connection refused" else ""
        raise LoadtestError(f"cannot reach {target.url}: {failure}{hint}")
    return status or 0
