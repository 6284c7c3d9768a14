"""Hot reload: the registry watcher swaps in moved alias targets; unknown aliases are re-read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.clock import Clock
from support.data import FLOWERS, tamper
from support.metrics import scrape, value
from support.wait import wait_for

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.serving.manager import ReloadOutcome

from .traffic_helpers import tree_version

FLOWER = FLOWERS[0]


@pytest.fixture
def v2(iris_meta: ModelMetadata, registry: Registry, iris: tuple[Any, Any]) -> ModelMetadata:
    return tree_version(registry, iris)


def _predict(client: TestClient, model: str = "iris") -> Any:
    return client.post("/api/predict", json={"features": FLOWER, "model": model})


def _tick(client: TestClient) -> list[ReloadOutcome]:
    """One watcher check, run on the app's event loop."""
    watcher = client.app.state.mlserve.traffic.watcher  # type: ignore[attr-defined]
    outcomes: list[ReloadOutcome] = client.portal.call(watcher.check)  # type: ignore[union-attr]
    return outcomes


def test_watcher_swaps_in_a_moved_alias_within_the_interval(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0.05})
    assert _predict(client).json()["version"] == 1

    registry.set_alias("iris", "production", 2)

    wait_for(lambda: _predict(client).json()["version"] == 2, "the watcher to swap in v2", 10)
    assert value(scrape(client), "mlserve_model_swaps_total", model="iris") == 1
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}["iris"]
    assert listed["serving_version"] == 2


def test_a_check_reloads_only_when_the_registry_changed(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    assert _tick(client) == []  # first look: nothing moved since loading
    registry.set_alias("iris", "production", 2)

    outcomes = _tick(client)

    assert [(o.name, o.previous_version, o.version) for o in outcomes] == [("iris", 1, 2)]
    assert _tick(client) == []
    assert _predict(client).json()["version"] == 2


def test_watcher_refreshes_aliases_of_references(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    registry.set_alias("iris", "canary", 1)
    client = serve(traffic={"watch_interval_s": 0})
    assert _predict(client, "iris@canary").json()["version"] == 1
    registry.set_alias("iris", "canary", 2)

    _tick(client)

    assert _predict(client, "iris@canary").json()["version"] == 2
    assert _predict(client).json()["version"] == 1  # production did not move


def test_interval_zero_turns_the_watcher_off(
    v2: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    traffic = client.app.state.mlserve.traffic  # type: ignore[attr-defined]
    wait_for(lambda: traffic._task.done(), "the traffic task to finish its startup work")


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    tamper(registry, v2)
    registry.set_alias("iris", "production", 2)

    assert _tick(client) == []

    assert _predict(client).json()["version"] == 1
    assert client.get("/api/ready").status_code == 200


def test_models_unloaded_through_the_repository_api_stay_unloaded(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0}, server={"model_control": "explicit"})
    assert client.post("/v2/repository/models/iris/unload").status_code == 200
    registry.set_alias("iris", "production", 2)

    assert _tick(client) == []

    assert _predict(client).status_code == 503
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}["iris"]
    assert listed["status"] == "unloaded"
    assert client.get("/api/ready").json()["models"] == {"iris": "unloaded"}


def test_an_alias_created_after_startup_is_found_without_a_reload(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    registry.set_alias("iris", "canary", 2)

    response = _predict(client, "iris@canary")

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


def test_alias_misses_reread_the_registry_at_most_once_a_second(
    v2: ModelMetadata,
    registry: Registry,
    serve: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    manager = client.app.state.mlserve.manager  # type: ignore[attr-defined]
    clock = Clock()
    manager.clock = clock
    reads: list[str] = []
    original = manager.registry.aliases

    def counting(name: str) -> dict[str, int]:
        reads.append(name)
        return dict(original(name))

    monkeypatch.setattr(manager.registry, "aliases", counting)

    for _ in range(5):
        assert _predict(client, "iris@nosuch").status_code == 404
    assert reads == ["iris"]
    registry.set_alias("iris", "canary", 2)
    assert _predict(client, "iris@canary").status_code == 404  # within the second: not re-read
    clock.advance(1.0)
    assert _predict(client, "iris@canary").json()["version"] == 2
    assert reads == ["iris", "iris"]


def test_a_request_that_picked_the_old_version_before_a_swap_still_gets_its_answer(
    v2: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0})
    manager = client.app.state.mlserve.manager  # type: ignore[attr-defined]
    registry.set_alias("iris", "production", 2)

    async def scenario() -> tuple[int, int]:
        old = await manager.get("iris")
        row = old.model.prepare(features=FLOWER)
        await manager.reload("iris")  # swaps, and starts retiring the old runtime
        for _ in range(20):  # e.g. a shared-cache round trip before the prediction
            await asyncio.sleep(0)
        prediction = await old.batcher.submit(row)
        assert prediction.label
        return old.version, (await manager.get("iris")).version

    assert client.portal.call(scenario) == (1, 2)  # type: ignore[union-attr]
