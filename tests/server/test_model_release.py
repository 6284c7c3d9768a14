"""Memory of unloaded models: a retired runtime stops as soon as no request holds it (not after
its whole grace period), its model is freed by reference counting alone, and the heap is
trimmed after it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from support.data import FLOWERS, IRIS_FEATURES
from support.wait import until

from mlserve.config import Settings
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.serving import manager as manager_module
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics

TIMEOUT = 10.0
NEVER = 3600.0  # a grace period no test waits out: only letting go can stop the runtime


@pytest.fixture
def three_models(register: Callable[..., ModelMetadata], iris_estimator: Any) -> list[str]:
    for name in ["m0", "m1", "m2"]:
        register(iris_estimator, name, feature_names=IRIS_FEATURES)
    return ["m0", "m1", "m2"]


@pytest.fixture
def long_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "EVICT_GRACE_S", NEVER)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what is freed is freed by reference counting, right
    when its last holder lets go, not at some later collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _run(manager: ModelManager, scenario: Callable[[ModelManager], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await manager.load_all()
            await scenario(manager)
        finally:
            await asyncio.wait_for(manager.close(), TIMEOUT)

    asyncio.run(main())


def _manager(make_settings: Callable[..., Settings], registry: Registry, **kw: Any) -> ModelManager:
    trim = kw.pop("trim", None)
    return ModelManager(make_settings(server=kw), registry, ServerMetrics(), trim=trim)


def test_an_evicted_model_is_freed_once_drained_without_waiting_out_its_grace(
    three_models: list[str],
    make_settings: Callable[..., Settings],
    registry: Registry,
    long_grace: None,
    no_collector: None,
) -> None:
    async def scenario(manager: ModelManager) -> None:
        runtime = await manager.get("m0")
        estimator = weakref.ref(runtime.model.estimator)
        stopped = weakref.ref(runtime.batcher)
        del runtime
        await manager.get("m1")  # max_loaded=1: m0 is unloaded to make room
        assert manager.models["m0"].current is None
        await until(lambda: not manager.retirements.tasks, "m0 to stop", TIMEOUT)
        assert stopped() is None
        assert estimator() is None
        gauge = manager.metrics.registry.get_sample_value("mlserve_models_loaded")
        assert gauge == 1

    _run(_manager(make_settings, registry, max_loaded=1), scenario)


def test_a_request_holding_an_evicted_model_is_answered_and_then_the_model_is_freed(
    three_models: list[str],
    iris_estimator: Any,
    make_settings: Callable[..., Settings],
    registry: Registry,
    long_grace: None,
    no_collector: None,
) -> None:
    async def scenario(manager: ModelManager) -> None:
        held = await manager.get("m0")  # picked by a request that has not sent its row yet
        await manager.get("m1")
        assert held.retired and manager.models["m0"].current is None
        for _ in range(10):
            await asyncio.sleep(0)
        assert manager.retirements.tasks  # still held: not stopped
        row = held.model.prepare(text=None, features=FLOWERS[2])
        answer = await asyncio.wait_for(held.batcher.submit(row), TIMEOUT)
        assert answer.label == iris_estimator.predict(np.array([FLOWERS[2]]))[0]

        estimator = weakref.ref(held.model.estimator)
        del held  # the request is done with it
        await until(lambda: not manager.retirements.tasks, "m0 to stop", TIMEOUT)
        assert estimator() is None

    _run(_manager(make_settings, registry, max_loaded=1), scenario)


def test_closing_stops_a_held_retired_runtime_without_its_grace(
    three_models: list[str],
    make_settings: Callable[..., Settings],
    registry: Registry,
    long_grace: None,
) -> None:
    kept: list[Any] = []

    async def scenario(manager: ModelManager) -> None:
        kept.append(await manager.get("m0"))
        await manager.get("m1")
        assert manager.retirements.tasks

    _run(_manager(make_settings, registry, max_loaded=1), scenario)  # close() returns
    assert kept[0].batcher.queue_depth == 0


def test_the_heap_is_trimmed_after_an_evicted_model_is_freed(
    three_models: list[str],
    make_settings: Callable[..., Settings],
    registry: Registry,
    no_collector: None,
) -> None:
    # What the trim hook saw when called: whether m0's estimator was already freed.
    trims: list[bool] = []
    estimators: list[weakref.ref[Any]] = []

    def trim() -> None:
        trims.append(estimators[0]() is None)

    async def scenario(manager: ModelManager) -> None:
        runtime = await manager.get("m0")
        estimators.append(weakref.ref(runtime.model.estimator))
        del runtime
        assert trims == []  # nothing unloaded yet: nothing to trim
        await manager.get("m1")  # m0 goes
        await until(lambda: bool(trims), "a heap trim", TIMEOUT)
        assert trims == [True]

    _run(_manager(make_settings, registry, max_loaded=1, trim=trim), scenario)


def test_a_reloaded_out_version_is_freed_as_soon_as_it_is_swapped_out(
    three_models: list[str],
    register: Callable[..., ModelMetadata],
    iris_estimator: Any,
    make_settings: Callable[..., Settings],
    registry: Registry,
    no_collector: None,
) -> None:
    async def scenario(manager: ModelManager) -> None:
        old = await manager.get("m0")
        estimator = weakref.ref(old.model.estimator)
        del old
        register(iris_estimator, "m0", feature_names=IRIS_FEATURES)  # version 2
        outcome = await manager.reload("m0")
        assert outcome.changed and outcome.version == 2
        # RETIRE_GRACE_S (2 s) is not waited out: nobody holds version 1 any more.
        await until(lambda: estimator() is None, "version 1 to be freed", TIMEOUT)
        assert manager.retirements.tasks == set()

    _run(_manager(make_settings, registry), scenario)
