"""Spread the load over several processes and merge their raw results exactly."""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mlserve.loadtest.options import MAX_DURATION_S, LoadtestError
from mlserve.loadtest.plan import LoadPlan, Target
from mlserve.loadtest.runner import Progress, run_engine
from mlserve.loadtest.stats import RunResult, merge_results

__all__ = ["run_load", "run_processes"]


def _child_main(
    index: int,
    target: Target,
    plan: LoadPlan,
    events: Any,
    go: Any,
    start_at: Any,
    stop: Any,
) -> None:
    """One spawned load process: wait for the common start, run its share, send the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    try:
        events.put(("ready", index, None))
        if not go.wait(120):
            return
        share = replace(plan, start_at=start_at.value)
        result = run_engine(
            target,
            share,
            on_progress=lambda p: events.put(("progress", index, p)),
            should_stop=stop.is_set,
        )
        events.put(("result", index, result))
    except BaseException as exc:  # report it to the parent, whatever it is
        events.put(("error", index, f"{type(exc).__name__}: {exc}"))


def run_processes(
    target: Target,
    plan: LoadPlan,
    processes: int,
    *,
    on_progress: Callable[[int, Progress], None] | None = None,
) -> RunResult:
    """Spread the load over `processes` spawned processes and merge their raw results."""
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    go = ctx.Event()
    stop = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_child_main,
            args=(i, target, plan.share(i, processes), events, go, start_at, stop),
            name=f"mlserve-loadtest-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results: dict[int, RunResult] = {}
    ready = 0
    setup_deadline = time.monotonic() + 120
    hard_deadline = (
        time.monotonic()
        + 120
        + plan.warmup
        + (plan.duration if plan.duration is not None else MAX_DURATION_S)
        + plan.timeout * 2
        + 30
    )
    try:
        while len(results) < processes:
            try:
                kind, index, payload = events.get(timeout=0.25)
            except queue_mod.Empty:
                if not go.is_set() and time.monotonic() > setup_deadline:
                    raise LoadtestError("load processes did not start within 120 s") from None
                if time.monotonic() > hard_deadline:
                    raise LoadtestError("load processes did not finish in time") from None
                dead = [p for i, p in enumerate(procs) if i not in results and not p.is_alive()]
                if dead and events.empty():
                    raise LoadtestError(
                        f"load process {dead[0].name} exited with code {dead[0].exitcode}"
                    ) from None
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if kind == "ready":
                ready += 1
                if ready == processes:
                    start_at.value = time.perf_counter() + 0.1
                    go.set()
            elif kind == "progress" and on_progress is not None:
                on_progress(index, payload)
            elif kind == "result":
                results[index] = payload
            elif kind == "error":
                raise LoadtestError(f"load process {index} failed: {payload}")
    finally:
        stop.set()
        go.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        events.close()
    return merge_results(results[i] for i in range(processes))


def run_load(
    target: Target,
    plan: LoadPlan,
    *,
    processes: int = 1,
    on_progress: Callable[[int, Progress], None] | None = None,
) -> RunResult:
    """Run the plan in this process, or spread over several with results merged exactly."""
    if processes == 1:
        callback = None if on_progress is None else (lambda p: on_progress(0, p))
        return run_engine(target, plan, on_progress=callback)
    return run_processes(target, plan, processes, on_progress=on_progress)
