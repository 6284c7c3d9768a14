"""The circuit breaker: consecutive model failures make a version fail fast, then it recovers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from support.clock import Clock

from mlserve.errors import InvalidInputError, PredictionError
from mlserve.runtime.batcher import Batcher, BatchingConfig
from mlserve.runtime.breaker import BreakerConfig, CircuitBreaker, ModelDegradedError


class Model:
    """Fails while `failing` is set; refuses inputs equal to "refuse" (an input error)."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    def __call__(self, rows: list[Any]) -> list[str]:
        self.calls += 1
        if "refuse" in rows:
            raise InvalidInputError("refused")
        if self.failing:
            raise RuntimeError("model crashed")
        return [f"{row}!" for row in rows]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def make(
    clock: Clock, *, threshold: int = 3, cooldown: float = 30.0
) -> tuple[Batcher[str], Model, CircuitBreaker, list[bool]]:
    changes: list[bool] = []
    breaker = CircuitBreaker(
        "m:1",
        config=BreakerConfig(failure_threshold=threshold, cooldown_s=cooldown),
        clock=clock,
        on_change=changes.append,
    )
    model = Model()
    batcher: Batcher[str] = Batcher(model, config=BatchingConfig(), name="m:1", breaker=breaker)
    return batcher, model, breaker, changes


async def fail_times(batcher: Batcher[str], n: int) -> None:
    for _ in range(n):
        with pytest.raises(PredictionError):
            await batcher.submit("x")


def test_breaker_opens_after_threshold_consecutive_failures_and_fails_fast() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, model, breaker, changes = make(clock, threshold=3)
        await fail_times(batcher, 2)
        assert breaker.state == "closed"
        await fail_times(batcher, 1)
        assert breaker.state == "open"
        assert changes == [True]
        calls = model.calls

        with pytest.raises(ModelDegradedError) as caught:
            await batcher.submit("x")

        assert model.calls == calls  # failed fast: the model was not called
        assert caught.value.status_code == 503
        assert caught.value.code == "model_degraded"
        assert caught.value.headers() == {"Retry-After": "30"}
        assert "3 consecutive failed predictions" in caught.value.message
        await batcher.stop()

    run(body)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, model, breaker, _ = make(clock, threshold=3)
        await fail_times(batcher, 2)
        model.failing = False
        assert await batcher.submit("ok") == "ok!"
        model.failing = True
        await fail_times(batcher, 2)
        assert breaker.state == "closed"
        await batcher.stop()

    run(body)


def test_refused_inputs_do_not_count_as_model_failures() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, _, breaker, _ = make(clock, threshold=2)
        for _ in range(5):
            with pytest.raises(InvalidInputError):
                await batcher.submit("refuse")
        assert breaker.state == "closed"
        await batcher.stop()

    run(body)


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_it() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, model, breaker, changes = make(clock, threshold=2, cooldown=10)
        await fail_times(batcher, 2)
        clock.advance(9.5)
        with pytest.raises(ModelDegradedError):
            await batcher.submit("x")
        clock.advance(1)
        assert breaker.state == "half_open"
        model.failing = False

        assert await batcher.submit("probe") == "probe!"

        assert breaker.state == "closed"
        assert changes == [True, False]
        assert await batcher.submit("next") == "next!"
        await batcher.stop()

    run(body)


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, model, breaker, _ = make(clock, threshold=2, cooldown=10)
        await fail_times(batcher, 2)
        clock.advance(10)
        calls = model.calls

        await fail_times(batcher, 1)  # the probe

        assert model.calls == calls + 1
        assert breaker.state == "open"
        with pytest.raises(ModelDegradedError):
            await batcher.submit("x")
        assert model.calls == calls + 1
        clock.advance(10)
        model.failing = False
        assert await batcher.submit("x") == "x!"
        await batcher.stop()

    run(body)


def test_only_one_probe_at_a_time_while_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        "m:1", config=BreakerConfig(failure_threshold=1, cooldown_s=5), clock=clock
    )
    breaker.record_failure()
    clock.advance(5)

    breaker.check()  # the probe
    with pytest.raises(ModelDegradedError):
        breaker.check()  # a second caller while the probe has not reported
    clock.advance(5)
    breaker.check()  # the probe never reported (its caller left): another one after a cooldown


def test_requests_queued_when_it_opens_fail_fast_instead_of_waiting() -> None:
    async def body() -> None:
        clock = Clock()
        batcher, model, breaker, _ = make(clock, threshold=1)
        # Unbatched: each queued request would get its own failing model call.
        batcher.config = BatchingConfig(enabled=False)
        tasks = [asyncio.create_task(batcher.submit(f"r{i}")) for i in range(5)]
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert isinstance(results[0], PredictionError)
        assert all(isinstance(r, ModelDegradedError) for r in results[1:]), results
        assert model.calls == 1
        assert breaker.state == "open"
        await batcher.stop()

    run(body)
