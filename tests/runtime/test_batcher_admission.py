"""Latency-budget admission: the batcher refuses at once what it could not answer within
batching.max_queue_delay_ms, judged from the model's observed calls; max_queue stays a cap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mlserve.errors import OverloadedError
from mlserve.runtime.batcher import Batcher, BatchingConfig, CallCost

TIMEOUT = 10.0
CALL_S = 0.2  # the fake model's time per call, whatever its rows
BUDGET_MS = 1000.0  # about 5 calls
SLACK_S = 3.0  # noisy machine: generous, but far below what an unbounded queue would wait


class TimedModel:
    """A predict function taking CALL_S per call (a blocking wait on an event nobody sets,
    standing in for model work on the worker thread)."""

    def __init__(self, call_s: float = CALL_S) -> None:
        self.call_s = call_s
        self.calls: list[int] = []
        self._never = threading.Event()

    def __call__(self, rows: list[Any]) -> list[str]:
        self.calls.append(len(rows))
        self._never.wait(self.call_s)
        return [f"{row}!" for row in rows]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def make(model: TimedModel, **config: Any) -> Batcher[str]:
    batcher: Batcher[str] = Batcher(model, config=BatchingConfig(**config), name="timed:1")
    batcher.start()
    return batcher


async def timed(batcher: Batcher[str], row: Any) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        await batcher.submit(row)
    except OverloadedError:
        return "refused", time.perf_counter() - started
    return "answered", time.perf_counter() - started


def test_requests_beyond_the_latency_budget_are_refused_at_once() -> None:
    async def scenario() -> None:
        model = TimedModel()
        # One row a call: 40 requests queued would take 40 x 0.2 s = 8 s; the budget is 1 s.
        batcher = make(model, max_batch_size=1, max_queue=1024, max_queue_delay_ms=BUDGET_MS)
        await batcher.submit("warm-up")  # one timed call: the cost model knows the pace
        assert batcher.cost.known

        outcomes = await asyncio.gather(*(timed(batcher, i) for i in range(40)))

        answered = [s for what, s in outcomes if what == "answered"]
        refused = [s for what, s in outcomes if what == "refused"]
        # About budget / call time are admitted (the running call included), the rest refused.
        assert 2 <= len(answered) <= 8, outcomes
        assert len(refused) == 40 - len(answered)
        assert max(refused) < 0.5, refused  # refused without waiting for the model
        assert max(answered) < BUDGET_MS / 1000.0 + SLACK_S, answered
        await batcher.stop()

    run(scenario)


def test_would_admit_says_beforehand_what_submit_would_do() -> None:
    async def scenario() -> None:
        model = TimedModel()
        batcher = make(model, max_batch_size=1, max_queue_delay_ms=BUDGET_MS)
        assert batcher.would_admit()  # nothing timed yet: only max_queue applies
        await batcher.submit("warm-up")
        tasks = [asyncio.create_task(timed(batcher, i)) for i in range(30)]
        await asyncio.sleep(0)  # every submit has run to its admission decision

        assert not batcher.would_admit()
        with pytest.raises(OverloadedError) as caught:
            await batcher.submit("one too many")
        assert caught.value.status_code == 503
        assert caught.value.retry_after is not None and caught.value.retry_after >= 1
        assert "max_queue_delay_ms" in caught.value.message

        await asyncio.gather(*tasks)
        assert batcher.would_admit()  # drained: admitted again
        await batcher.stop()

    run(scenario)


def test_batched_rows_are_admitted_by_the_calls_they_need() -> None:
    async def scenario() -> None:
        model = TimedModel()
        # 64 rows a call at 0.2 s: 100 single-row requests are 2 calls, well within 1 s.
        batcher = make(model, max_batch_size=64, max_queue_delay_ms=BUDGET_MS)
        await batcher.submit("warm-up")
        await batcher.submit_many(list(range(32)))  # a second size: the time is per call
        assert batcher.cost.per_row == pytest.approx(0.0, abs=0.002)
        outcomes = await asyncio.gather(*(timed(batcher, i) for i in range(100)))
        assert all(what == "answered" for what, _ in outcomes), outcomes
        await batcher.stop()

    run(scenario)


def test_an_empty_queue_takes_a_request_however_slow_the_model() -> None:
    async def scenario() -> None:
        model = TimedModel(call_s=0.5)
        batcher = make(model, max_batch_size=1, max_queue_delay_ms=10.0)  # budget < one call
        await batcher.submit("warm-up")
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.1)  # "a" is running; the queue is empty again
        assert await batcher.submit("b") == "b!"  # queued behind "a": waits over the budget
        assert await first == "a!"
        await batcher.stop()

    run(scenario)


def test_zero_budget_leaves_only_max_queue() -> None:
    async def scenario() -> None:
        model = TimedModel(call_s=0.05)
        batcher = make(model, max_batch_size=1, max_queue=1024, max_queue_delay_ms=0.0)
        await batcher.submit("warm-up")
        outcomes = await asyncio.gather(*(timed(batcher, i) for i in range(30)))
        assert all(what == "answered" for what, _ in outcomes)
        await batcher.stop()

    run(scenario)


def test_the_cost_model_separates_the_fixed_part_from_the_part_per_row() -> None:
    cost = CallCost()
    for _ in range(20):
        cost.observe(1, 0.011)  # 10 ms fixed + 1 ms a row
        cost.observe(64, 0.074)
    assert cost.fixed == pytest.approx(0.010, rel=0.01)
    assert cost.per_row == pytest.approx(0.001, rel=0.01)
    assert cost.seconds(2, 128) == pytest.approx(0.148, rel=0.01)


def test_the_cost_model_of_alike_batch_sizes_charges_it_all_per_call() -> None:
    cost = CallCost()
    assert not cost.known
    cost.observe(1, 0.04)
    cost.observe(2, 0.05)
    assert cost.known
    assert (cost.fixed, cost.per_row) == (pytest.approx(0.045, rel=0.05), 0.0)
