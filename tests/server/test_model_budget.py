"""server.max_loaded / memory_budget_mb: load on first request, unload the least recently used
idle model, never one with requests in flight nor a pinned one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.data import FLOWERS, IRIS_FEATURES
from support.metrics import matching, scrape
from support.servers import running
from support.wait import until

from mlserve.config import Settings
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.serving.budget import RUNTIME_OVERHEAD_BYTES
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics

from . import broken_models

TIMEOUT = 10.0


def _labelled(iris: tuple[Any, Any], index: int) -> Any:
    """A logistic regression on iris whose labels carry `index` ("setosa-3"), so an answer
    tells which model gave it."""
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    return LogisticRegression(max_iter=1000).fit(x, [f"{label}-{index}" for label in y])


@pytest.fixture(scope="module")
def labelled_estimators() -> list[Any]:
    from support.data import iris

    data = iris()
    return [_labelled(data, i) for i in range(5)]


@pytest.fixture
def five_models(
    register: Callable[..., ModelMetadata], labelled_estimators: list[Any]
) -> list[str]:
    """m0 … m4, each a labelled iris classifier."""
    for i, estimator in enumerate(labelled_estimators):
        register(estimator, f"m{i}", feature_names=IRIS_FEATURES)
    return [f"m{i}" for i in range(5)]


def _manager(make_settings: Callable[..., Settings], registry: Registry, **kw: Any) -> ModelManager:
    """A manager over the test registry; `kw` are server settings (max_loaded, ...)."""
    return ModelManager(make_settings(server=kw), registry, ServerMetrics())


def _run(
    make: Callable[[], ModelManager], scenario: Callable[[ModelManager], Awaitable[None]]
) -> None:
    async def main() -> None:
        manager = make()
        try:
            await manager.load_all()
            await scenario(manager)
        finally:
            await manager.close()

    asyncio.run(main())


def _loaded(manager: ModelManager) -> set[str]:
    return {name for name, served in manager.models.items() if served.current is not None}


def _sample(manager: ModelManager, name: str, metric: str) -> float:
    value = manager.metrics.registry.get_sample_value(metric, {"model": name})
    return value or 0.0


# ---------------------------------------------------------------------------- the manager
def test_without_a_limit_every_model_loads_at_startup(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def scenario(manager: ModelManager) -> None:
        assert _loaded(manager) == set(five_models)
        assert not any(served.on_demand for served in manager.models.values())

    _run(lambda: _manager(make_settings, registry), scenario)


def test_with_max_loaded_models_load_on_their_first_request(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def scenario(manager: ModelManager) -> None:
        assert _loaded(manager) == set()
        assert {s.status for s in manager.models.values()} == {"unloaded"}
        runtime = await manager.get("m3")
        assert runtime.model.name == "m3"
        assert manager.models["m3"].status == "loaded"
        assert _loaded(manager) == {"m3"}
        assert _sample(manager, "m3", "mlserve_model_loads_total") == 1
        count = manager.metrics.registry.get_sample_value("mlserve_model_cold_start_seconds_count")
        assert count == 1

    _run(lambda: _manager(make_settings, registry, max_loaded=2), scenario)


def test_the_least_recently_used_idle_model_is_unloaded_first(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def scenario(manager: ModelManager) -> None:
        await manager.get("m0")
        await manager.get("m1")
        await manager.get("m0")  # m1 is now the least recently used
        await manager.get("m2")
        assert _loaded(manager) == {"m0", "m2"}
        assert manager.models["m1"].status == "unloaded"
        await manager.get("m1")  # m0 (used before m2) goes
        assert _loaded(manager) == {"m1", "m2"}
        assert _sample(manager, "m1", "mlserve_model_evictions_total") == 1
        assert _sample(manager, "m0", "mlserve_model_evictions_total") == 1
        assert _sample(manager, "m2", "mlserve_model_evictions_total") == 0

    _run(lambda: _manager(make_settings, registry, max_loaded=2), scenario)


def test_an_unloaded_model_answers_again_after_a_cold_start(
    five_models: list[str],
    labelled_estimators: list[Any],
    make_settings: Callable[..., Settings],
    registry: Registry,
) -> None:
    async def scenario(manager: ModelManager) -> None:
        first = await manager.get("m0")
        await manager.get("m1")
        assert first.retired and manager.models["m0"].current is None
        again = await manager.get("m0")
        assert again is not first
        row = again.model.prepare(text=None, features=FLOWERS[1])
        answer = await asyncio.wait_for(again.batcher.submit(row), TIMEOUT)
        expected = labelled_estimators[0].predict(np.array([FLOWERS[1]]))[0]
        assert answer.label == expected
        assert _sample(manager, "m0", "mlserve_model_loads_total") == 2

    _run(lambda: _manager(make_settings, registry, max_loaded=1), scenario)


def test_a_model_with_a_request_in_flight_is_not_unloaded(
    five_models: list[str],
    register: Callable[..., ModelMetadata],
    gated_estimator: Callable[[str], Any],
    gate: tuple[str, broken_models.Gate],
    make_settings: Callable[..., Settings],
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate_name, held = gate
    register(gated_estimator(gate_name), "gated", feature_names=IRIS_FEATURES)

    async def scenario(manager: ModelManager) -> None:
        gated = await manager.get("gated")
        row = gated.model.prepare(text=None, features=FLOWERS[0])
        running_call = asyncio.create_task(gated.batcher.submit(row))
        await asyncio.to_thread(held.entered.wait, TIMEOUT)
        queued_call = asyncio.create_task(gated.batcher.submit(row))
        await until(lambda: gated.batcher.queue_depth == 1, "a queued request", TIMEOUT)
        assert gated.batcher.in_flight == 1 and gated.batcher.queue_depth == 1

        with caplog.at_level(logging.WARNING, logger="mlserve.serving.manager"):
            await manager.get("m0")  # over max_loaded=1, but the only other model is busy
        assert manager.models["gated"].current is gated and not gated.retired
        assert _loaded(manager) == {"gated", "m0"}
        assert any("over the model budget" in r.getMessage() for r in caplog.records)

        held.release.set()
        answers = await asyncio.wait_for(asyncio.gather(running_call, queued_call), TIMEOUT)
        assert [a.label for a in answers] == ["setosa", "setosa"]
        await until(lambda: gated.batcher.in_flight == 0, "the model thread to finish", TIMEOUT)
        await manager.get("m1")  # both idle now: both go, least recently used first
        assert _loaded(manager) == {"m1"}
        assert gated.retired

    _run(lambda: _manager(make_settings, registry, max_loaded=1), scenario)


def test_pinned_models_load_at_startup_and_are_never_unloaded(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def scenario(manager: ModelManager) -> None:
        assert _loaded(manager) == {"m0"}
        for name in ["m1", "m2", "m3", "m1"]:
            await manager.get(name)
            assert "m0" in _loaded(manager)
        assert _loaded(manager) == {"m0", "m1"}
        assert _sample(manager, "m0", "mlserve_model_evictions_total") == 0

    _run(lambda: _manager(make_settings, registry, max_loaded=2, pinned_models=["m0"]), scenario)


def test_models_named_with_serve_model_are_never_unloaded(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def scenario(manager: ModelManager) -> None:
        assert _loaded(manager) == {"m0", "m1"}  # loaded at startup, over max_loaded
        await manager.get("m1")
        await manager.get("m0")
        assert _loaded(manager) == {"m0", "m1"}
        assert _sample(manager, "m0", "mlserve_model_evictions_total") == 0
        assert _sample(manager, "m1", "mlserve_model_evictions_total") == 0

    _run(
        lambda: _manager(make_settings, registry, max_loaded=1, models=["m0", "m1"]),
        scenario,
    )


def test_the_memory_budget_counts_each_models_estimate(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    async def measure(manager: ModelManager) -> None:
        sizes.append((await manager.get("m0")).estimated_bytes)

    sizes: list[int] = []
    _run(lambda: _manager(make_settings, registry, max_loaded=10), measure)
    (one,) = sizes
    meta = registry.resolve("m0")
    # The model's objects (coefficients, classes, metadata) at least its artifact's size.
    assert one >= meta.size_bytes + RUNTIME_OVERHEAD_BYTES

    async def scenario(manager: ModelManager) -> None:
        for name in ["m0", "m1", "m2", "m3"]:
            await manager.get(name)
            held = [rt.estimated_bytes for rt in manager.runtimes()]
            assert sum(held) <= manager.budget.budget_bytes
        assert _loaded(manager) == {"m2", "m3"}  # room for two of them
        evicted = sum(_sample(manager, f"m{i}", "mlserve_model_evictions_total") for i in range(4))
        assert evicted == 2
        managers.append(manager)

    managers: list[ModelManager] = []
    budget_mb = 2.5 * one / 2**20
    _run(lambda: _manager(make_settings, registry, memory_budget_mb=budget_mb), scenario)
    # Once the two unloaded ones have drained, the gauge holds the two loaded ones.
    gauge = managers[0].metrics.registry.get_sample_value("mlserve_models_estimated_bytes")
    assert gauge == pytest.approx(2 * one, rel=0.05)


def test_an_unload_through_the_repository_api_is_not_undone_by_a_request(
    five_models: list[str], make_settings: Callable[..., Settings], registry: Registry
) -> None:
    from mlserve.errors import ModelUnavailableError

    async def scenario(manager: ModelManager) -> None:
        await manager.get("m0")
        await manager.unload("m0")
        with pytest.raises(ModelUnavailableError, match="unloaded through the model repository"):
            await manager.get("m0")

    _run(lambda: _manager(make_settings, registry, max_loaded=2), scenario)


# ---------------------------------------------------------------------------- the HTTP server
def _predict(client: Any, model: str, flower: list[float]) -> Any:
    features = dict(zip(IRIS_FEATURES, flower, strict=True))
    return client.post("/api/predict", json={"model": model, "features": features})


def test_the_server_is_ready_and_lists_models_not_loaded_because_of_the_budget(
    five_models: list[str],
    labelled_estimators: list[Any],
    serve: Callable[..., TestClient],
) -> None:
    client = serve(server={"max_loaded": 1})

    ready = client.get("/api/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["models"].values()) == {"unloaded"}
    # Not loaded because of the budget is not a fault: health stays healthy, no smoke run.
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy"
    assert {m["status"] for m in health.json()["models"]} == {"unloaded"}

    for name in ["m0", "m1", "m0"]:
        response = _predict(client, name, FLOWERS[0])
        assert response.status_code == 200, response.text
        index = int(name[1:])
        expected = labelled_estimators[index].predict(np.array([FLOWERS[0]]))[0]
        assert response.json()["prediction"] == expected

    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["m0"]["status"] == "loaded" and listed["m0"]["loaded_versions"] == [1]
    assert listed["m1"]["status"] == "unloaded" and listed["m1"]["loaded_versions"] == []
    assert listed["m1"]["error"] is None
    info = client.get("/api/models/m1")
    assert info.status_code == 200, info.text
    assert info.json()["loaded"] is False
    assert client.get("/api/ready").status_code == 200
    by_name = {m["name"]: m for m in client.get("/api/health").json()["models"]}
    assert by_name["m0"]["status"] == "healthy" and by_name["m1"]["status"] == "unloaded"

    samples = scrape(client)
    assert matching(samples, "mlserve_model_loads_total", model="m0") == [2.0]
    assert matching(samples, "mlserve_model_evictions_total", model="m0") == [1.0]
    assert matching(samples, "mlserve_model_cold_start_seconds_count") == [3.0]


@pytest.mark.slow
def test_a_real_server_with_max_loaded_2_serves_five_models_correctly(
    five_models: list[str],
    labelled_estimators: list[Any],
    registry: Registry,
    home: Any,
) -> None:
    sequence = ["m0", "m1", "m2", "m0", "m3", "m4", "m4", "m1", "m2", "m0", "m3", "m0"]
    with running(registry.root, home, config={"server": {"max_loaded": 2}}) as server:
        for step, name in enumerate(sequence):
            flower = FLOWERS[step % len(FLOWERS)]
            response = server.post(
                "/api/predict",
                {"model": name, "features": dict(zip(IRIS_FEATURES, flower, strict=True))},
            )
            assert response.status_code == 200, (step, response.text)
            expected = labelled_estimators[int(name[1:])].predict(np.array([flower]))[0]
            assert response.json()["prediction"] == expected, step
            listed = server.get("/api/models").json()["models"]
            assert sum(m["status"] == "loaded" for m in listed) <= 2, (step, listed)
        samples = server.metrics()
        loads = sum(matching(samples, "mlserve_model_loads_total"))
        evictions = sum(matching(samples, "mlserve_model_evictions_total"))
        # Two models fit: every switch to a model not among the last two used is a cold start.
        assert loads == 10 and evictions == 8
        assert server.get("/api/ready").status_code == 200
