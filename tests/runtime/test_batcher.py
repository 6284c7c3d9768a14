"""The adaptive batcher: concurrent requests share vectorized calls; failures stay isolated."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mlserve.errors import ModelUnavailableError, OverloadedError, PredictionError
from mlserve.runtime.batcher import Batcher, BatchingConfig

TIMEOUT = 10.0


class FakeModel:
    """A predict function that records its calls and can be held inside a call."""

    def __init__(self, *, poison: Any = "poison", always_fail: bool = False) -> None:
        self.calls: list[list[Any]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()  # open unless a test holds it
        self.poison = poison
        self.always_fail = always_fail
        self.held_calls: dict[int, threading.Event] = {}  # call number -> gate of that call

    def hold(self) -> None:
        self.release.clear()

    def __call__(self, rows: list[Any]) -> list[str]:
        self.calls.append(list(rows))
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("never released")
        gate = self.held_calls.get(len(self.calls))
        if gate is not None and not gate.wait(TIMEOUT):
            raise TimeoutError("never released")
        if self.always_fail:
            raise RuntimeError("out of memory in /srv/secret/model.py")
        if self.poison in rows:
            raise ValueError("poisoned row")
        return [f"{row}!" for row in rows]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll the event loop until `condition` holds (bounded by a deadline)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def busy(batcher: Batcher[Any], model: FakeModel, row: Any = "first") -> asyncio.Task[Any]:
    """Occupy the model with one held call, so what is submitted next queues up."""
    model.hold()
    task = asyncio.create_task(batcher.submit(row))
    await asyncio.to_thread(model.entered.wait, TIMEOUT)
    assert model.entered.is_set(), "the first call never started"
    return task


def make(model: FakeModel, **config: Any) -> Batcher[str]:
    batcher: Batcher[str] = Batcher(model, config=BatchingConfig(**config), name="fake:1")
    batcher.start()
    return batcher


def test_a_lone_request_is_predicted_alone() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)

        assert await batcher.submit("a") == "a!"

        assert model.calls == [["a"]]
        await batcher.stop()

    run(scenario)


def test_requests_queued_while_the_model_is_busy_coalesce_up_to_max_batch_size() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=4)
        first = await busy(batcher, model)

        rest = [asyncio.create_task(batcher.submit(i)) for i in range(9)]
        await until(lambda: batcher.queue_depth == 9, "9 queued requests")
        model.release.set()
        results = await asyncio.gather(first, *rest)

        assert results == ["first!", *[f"{i}!" for i in range(9)]]
        assert [len(c) for c in model.calls] == [1, 4, 4, 1]
        await batcher.stop()

    run(scenario)


def test_many_concurrent_submits_make_few_calls_and_each_caller_gets_its_own_answer() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=64)

        results = await asyncio.gather(*(batcher.submit(i) for i in range(200)))

        assert results == [f"{i}!" for i in range(200)]
        assert all(len(c) <= 64 for c in model.calls)
        assert len(model.calls) <= 5  # 1 alone, then full batches of the rest
        assert sorted(r for c in model.calls for r in c) == list(range(200))
        await batcher.stop()

    run(scenario)


def test_submit_many_keeps_rows_together_and_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=4)

        results = await batcher.submit_many(list(range(10)))

        assert results == [f"{i}!" for i in range(10)]
        assert model.calls == [list(range(10))]  # one call, even over max_batch_size
        assert await batcher.submit_many([]) == []
        await batcher.stop()

    run(scenario)


def test_a_lone_request_is_not_delayed_by_a_timer_when_max_wait_ms_is_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_timer(self: Batcher[Any]) -> None:
        raise AssertionError("waited for a fuller batch")

    monkeypatch.setattr(Batcher, "_fill_wait", no_timer)

    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=64, max_wait_ms=0)

        assert await batcher.submit("a") == "a!"

        assert model.calls == [["a"]]
        await batcher.stop()

    run(scenario)


def test_max_wait_ms_waits_for_a_fuller_batch_and_flushes_when_full() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=3, max_wait_ms=60_000)
        started = time.monotonic()

        first = asyncio.create_task(batcher.submit("a"))
        for _ in range(50):  # give the batcher every chance to call the model early
            await asyncio.sleep(0)
        assert model.calls == []
        results = await asyncio.gather(first, batcher.submit("b"), batcher.submit("c"))

        assert results == ["a!", "b!", "c!"]
        assert model.calls == [["a", "b", "c"]]
        assert time.monotonic() - started < 30  # full batch: no wait for the deadline
        await batcher.stop()

    run(scenario)


def test_max_wait_ms_sends_a_partial_batch_at_the_deadline() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_batch_size=10, max_wait_ms=50)
        started = time.monotonic()

        assert await batcher.submit("a") == "a!"

        assert time.monotonic() - started >= 0.05
        assert model.calls == [["a"]]
        await batcher.stop()

    run(scenario)


def test_disabled_batching_predicts_each_request_alone() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, enabled=False)
        first = await busy(batcher, model)

        rest = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        model.release.set()
        await asyncio.gather(first, *rest)

        assert model.calls == [["first"], [0], [1], [2]]
        await batcher.stop()

    run(scenario)


def test_a_poisoned_row_fails_only_its_caller() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)

        tasks = [asyncio.create_task(batcher.submit(r)) for r in ("a", "poison", "b")]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        model.release.set()
        a, poisoned, b = await asyncio.gather(*tasks, return_exceptions=True)

        assert await first == "first!"
        assert (a, b) == ("a!", "b!")
        assert isinstance(poisoned, PredictionError)
        assert ["a", "poison", "b"] in model.calls  # they did share a batch first
        await batcher.stop()

    run(scenario)


def test_a_model_wide_failure_fails_every_caller_without_internals() -> None:
    async def scenario() -> None:
        model = FakeModel(always_fail=True)
        batcher = make(model)
        first = await busy(batcher, model)

        tasks = [asyncio.create_task(batcher.submit(r)) for r in ("a", "b", "c")]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        model.release.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)

        assert all(isinstance(r, PredictionError) for r in results), results
        for error in results:
            assert "secret" not in str(error) and "memory" not in str(error)
        # the batcher keeps working for the next request
        model.always_fail = False
        assert await batcher.submit("d") == "d!"
        await batcher.stop()

    run(scenario)


def test_a_cancelled_waiting_request_is_not_predicted_and_others_are_answered() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)

        keep1 = asyncio.create_task(batcher.submit("keep1"))
        gone = asyncio.create_task(batcher.submit("gone"))
        keep2 = asyncio.create_task(batcher.submit("keep2"))
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        gone.cancel()
        model.release.set()

        assert await asyncio.gather(first, keep1, keep2) == ["first!", "keep1!", "keep2!"]
        assert gone.cancelled()
        assert all("gone" not in call for call in model.calls)
        await batcher.stop()

    run(scenario)


def test_requests_over_max_queue_are_shed_with_retry_after() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model, max_queue=2)
        first = await busy(batcher, model)
        queued = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await until(lambda: batcher.queue_depth == 2, "2 queued requests")

        with pytest.raises(OverloadedError) as caught:
            await batcher.submit("one too many")

        assert caught.value.retry_after is not None and caught.value.retry_after > 0
        assert caught.value.status_code == 503
        assert "Retry-After" in caught.value.headers()
        model.release.set()
        assert await asyncio.gather(first, *queued) == ["first!", "0!", "1!"]
        await batcher.stop()

    run(scenario)


def test_stop_with_drain_answers_pending_requests_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)
        pending = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await until(lambda: batcher.queue_depth == 2, "2 queued requests")

        stopping = asyncio.create_task(batcher.stop(drain=True))
        await until(lambda: batcher._closing, "the batcher to start closing")
        with pytest.raises(ModelUnavailableError):
            await batcher.submit("late")
        model.release.set()
        await stopping

        assert await asyncio.gather(first, *pending) == ["first!", "0!", "1!"]

    run(scenario)


def test_stop_without_drain_fails_pending_requests_as_unavailable() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)
        pending = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await until(lambda: batcher.queue_depth == 2, "2 queued requests")

        stopping = asyncio.create_task(batcher.stop(drain=False))
        await until(lambda: all(t.done() for t in pending), "pending requests to fail")
        model.release.set()
        await stopping

        assert await first == "first!"  # the call already running finishes
        for task in pending:
            assert isinstance(task.exception(), ModelUnavailableError)
        assert len(model.calls) == 1

    run(scenario)


def test_stop_that_times_out_fails_the_running_batch_instead_of_hanging() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)
        pending = asyncio.create_task(batcher.submit("queued"))
        await until(lambda: batcher.queue_depth == 1, "1 queued request")

        await batcher.stop(drain=True, timeout=0.05)
        model.release.set()

        results = await asyncio.gather(first, pending, return_exceptions=True)
        assert all(isinstance(r, ModelUnavailableError) for r in results), results

    run(scenario)


def test_stop_that_times_out_while_isolating_a_failure_answers_every_caller() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)
        tasks = [asyncio.create_task(batcher.submit(r)) for r in ("a", "poison", "b")]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        retry_gate = model.held_calls[3] = threading.Event()  # call 2 fails, call 3 retries "a"
        model.release.set()
        await until(lambda: len(model.calls) == 3, "the first retry of the failed batch")

        await batcher.stop(drain=True, timeout=0.05)
        retry_gate.set()

        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert await first == "first!"
        assert all(isinstance(r, ModelUnavailableError | PredictionError) for r in results)

    run(scenario)


def test_every_model_call_is_observed_with_its_rows() -> None:
    async def scenario() -> None:
        seen: list[tuple[int, float]] = []
        model = FakeModel()
        batcher: Batcher[str] = Batcher(
            model,
            config=BatchingConfig(),
            name="fake:1",
            on_batch=lambda rows, seconds: seen.append((rows, seconds)),
        )

        await batcher.submit("a")
        await batcher.submit_many(["b", "c", "d"])

        assert [rows for rows, _ in seen] == [1, 3]
        assert all(seconds >= 0 for _, seconds in seen)
        await batcher.stop()

    run(scenario)


def test_an_input_the_predict_function_rejects_reaches_only_its_caller_as_is() -> None:
    from mlserve.errors import InvalidInputError

    def predict(rows: list[Any]) -> list[str]:
        if "bad" in rows:
            raise InvalidInputError("row 'bad' has a missing value")
        return [f"{row}!" for row in rows]

    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)
        batcher._predict = predict  # the queued requests meet the rejecting function
        tasks = [asyncio.create_task(batcher.submit(r)) for r in ("a", "bad", "b")]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")
        model.release.set()

        a, bad, b = await asyncio.gather(*tasks, return_exceptions=True)

        assert await first == "first!"
        assert (a, b) == ("a!", "b!")
        assert isinstance(bad, InvalidInputError) and "missing value" in bad.message
        await batcher.stop()

    run(scenario)


class FailingAfterFirst:
    """A predict function whose first call (held until released) answers and every later call
    raises: a model that broke while requests queued behind it."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, rows: list[Any]) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            if not self.release.wait(TIMEOUT):
                raise TimeoutError("never released")
            return [f"{row}!" for row in rows]
        raise RuntimeError("out of memory in /srv/secret/model.py")


def test_a_failed_batch_is_logged_once_and_a_broken_model_is_not_retried_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = FailingAfterFirst()

    async def scenario() -> list[Any]:
        batcher: Batcher[str] = Batcher(model, config=BatchingConfig(), name="fake:1")
        first = asyncio.create_task(batcher.submit("first"))
        await asyncio.to_thread(model.entered.wait, TIMEOUT)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
        await until(lambda: batcher.queue_depth == 6, "6 queued requests")
        model.release.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        await batcher.stop()
        return results

    with caplog.at_level(logging.DEBUG, logger="mlserve.runtime.batcher"):
        first, *failed = asyncio.run(asyncio.wait_for(scenario(), 20))

    assert first == "first!"
    assert all(isinstance(r, PredictionError) for r in failed), failed
    # the batch of 6, then 2 solo retries; the other 4 requests fail without a call
    assert model.calls == 1 + 1 + 2
    batcher_records = [r for r in caplog.records if r.name == "mlserve.runtime.batcher"]
    errors = [r for r in batcher_records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "batch of 6" in errors[0].getMessage() and errors[0].exc_info is not None
    assert all(r.levelno in (logging.DEBUG, logging.ERROR) for r in batcher_records)


def test_two_failed_solo_retries_fail_the_rest_of_the_batch_without_calling_the_model() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = make(model)
        first = await busy(batcher, model)

        rows = ["poison", "poison", "a", "b"]
        tasks = [asyncio.create_task(batcher.submit(r)) for r in rows]
        await until(lambda: batcher.queue_depth == 4, "4 queued requests")
        model.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert await first == "first!"
        assert isinstance(results[0], PredictionError)
        assert isinstance(results[1], PredictionError)
        # two failed solo retries in a row: the model is taken to be broken
        assert all(isinstance(r, PredictionError) for r in results[2:])
        assert len(model.calls) == 1 + 1 + 2
        model.poison = "none"
        assert await batcher.submit("c") == "c!"  # and it is tried again for new requests
        await batcher.stop()

    run(scenario)


@pytest.mark.parametrize("hook", ["on_batch", "deliver"])
def test_a_hook_that_raises_fails_its_batch_and_later_requests_are_answered(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[str] = []

    def boom_once(*args: Any) -> None:
        if not raised:
            raised.append(hook)
            raise RuntimeError(f"{hook} is broken")

    async def scenario() -> None:
        model = FakeModel()
        batcher: Batcher[str] = Batcher(model, config=BatchingConfig(), name="fake:1")
        if hook == "on_batch":
            batcher._on_batch = boom_once
        else:
            deliver = batcher._deliver

            def broken_deliver(batch: Any, results: Any) -> None:
                boom_once()
                deliver(batch, results)

            batcher._deliver = broken_deliver  # type: ignore[method-assign]

        with pytest.raises(PredictionError):
            await batcher.submit("a")

        assert await batcher.submit("b") == "b!"
        assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [
            f"{i}!" for i in range(5)
        ]
        await batcher.stop()

    with caplog.at_level(logging.ERROR, logger="mlserve.runtime.batcher"):
        run(scenario)

    assert raised == [hook]
    logged = [r for r in caplog.records if r.name == "mlserve.runtime.batcher"]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_the_queue_observer_is_told_every_change_of_the_queue_depth() -> None:
    async def scenario() -> None:
        depths: list[int] = []
        model = FakeModel()
        batcher: Batcher[str] = Batcher(
            model, config=BatchingConfig(), name="fake:1", on_queue=depths.append
        )
        first = await busy(batcher, model)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await until(lambda: batcher.queue_depth == 3, "3 queued requests")

        assert depths[-1] == 3
        model.release.set()
        await asyncio.gather(first, *rest)
        assert depths[-1] == 0
        assert 1 in depths and 2 in depths
        await batcher.stop()

    run(scenario)


def test_a_queue_observer_that_raises_does_not_stop_requests() -> None:
    def broken(depth: int) -> None:
        raise RuntimeError("metrics are down")

    async def scenario() -> None:
        model = FakeModel()
        batcher: Batcher[str] = Batcher(
            model, config=BatchingConfig(), name="fake:1", on_queue=broken
        )
        assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == ["0!", "1!", "2!"]
        await batcher.stop()

    run(scenario)
