"""A model registered after the server started is served: after POST /api/models/{name}/reload
and after the registry watcher's next pass — unless the server serves a fixed list
(server.models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import FLOWERS, IRIS_FEATURES, tamper
from support.wait import wait_for

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.serving.manager import ReloadOutcome

from .conftest import error_of

FLOWER = FLOWERS[0]  # a setosa
POSITIVE = "I love this product, it works great"


@pytest.fixture
def add_iris(
    register: Callable[..., ModelMetadata], iris_estimator: Any
) -> Callable[[], ModelMetadata]:
    """Register iris (tabular) — called once the server runs."""
    return lambda: register(iris_estimator, "iris", feature_names=IRIS_FEATURES)


def _predict_iris(client: TestClient) -> Any:
    return client.post("/api/predict", json={"features": FLOWER, "model": "iris"})


def _statuses(client: TestClient) -> dict[str, str]:
    return {m["name"]: m["status"] for m in client.get("/api/models").json()["models"]}


def _tick(client: TestClient) -> list[ReloadOutcome]:
    """One pass of the app's registry watcher, on the app's event loop."""
    watcher = client.app.state.mlserve.traffic.watcher  # type: ignore[attr-defined]
    outcomes: list[ReloadOutcome] = client.portal.call(watcher.check)  # type: ignore[union-attr]
    return outcomes


@pytest.mark.usefixtures("text_meta")
def test_reload_serves_a_model_registered_after_startup(
    add_iris: Callable[[], ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0}, raise_server_exceptions=False)
    add_iris()
    missing = error_of(_predict_iris(client), 404, "model_not_found")
    assert "POST /api/models/NAME/reload" in missing["message"]

    response = client.post("/api/models/iris/reload")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "iris",
        "status": "reloaded",
        "previous_version": None,
        "version": 1,
    }
    answer = _predict_iris(client).json()
    assert (answer["model"], answer["version"], answer["prediction"]) == ("iris", 1, "setosa")
    assert _statuses(client) == {"iris": "loaded", "sentiment": "loaded"}
    # The new model takes features: a request naming none now goes to it.
    default = client.post("/api/predict", json={"features": FLOWER}).json()
    assert default["model"] == "iris"
    again = client.post("/api/models/iris/reload").json()
    assert (again["status"], again["version"]) == ("unchanged", 1)


@pytest.mark.usefixtures("text_meta")
def test_reload_of_a_name_not_in_the_registry_is_404(serve: Callable[..., TestClient]) -> None:
    client = serve(traffic={"watch_interval_s": 0}, raise_server_exceptions=False)

    error = error_of(client.post("/api/models/nope/reload"), 404, "model_not_found")

    assert "'nope'" in error["message"]
    assert _statuses(client) == {"sentiment": "loaded"}


@pytest.mark.usefixtures("text_meta")
def test_the_watcher_serves_a_model_registered_after_startup(
    add_iris: Callable[[], ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0.05}, raise_server_exceptions=False)
    assert _predict_iris(client).status_code == 404

    add_iris()

    wait_for(lambda: _predict_iris(client).status_code == 200, "the watcher to serve iris", 10)
    assert _predict_iris(client).json()["prediction"] == "setosa"
    assert _statuses(client)["iris"] == "loaded"


def test_a_server_started_empty_serves_what_is_registered_later(
    add_iris: Callable[[], ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0}, raise_server_exceptions=False)
    before = client.post("/api/predict", json={"features": FLOWER})
    assert "no models are served" in error_of(before, 503)["message"]
    add_iris()

    outcomes = _tick(client)

    assert [(o.name, o.previous_version, o.version) for o in outcomes] == [("iris", None, 1)]
    assert _tick(client) == []  # nothing changed since
    after = client.post("/api/predict", json={"features": FLOWER})
    assert (after.status_code, after.json()["model"]) == (200, "iris")
    assert client.get("/api/ready").status_code == 200


@pytest.mark.usefixtures("text_meta")
def test_a_fixed_model_list_is_kept(
    add_iris: Callable[[], ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(
        server={"models": ["sentiment"]},
        traffic={"watch_interval_s": 0},
        raise_server_exceptions=False,
    )
    add_iris()

    assert _tick(client) == []
    reload = error_of(client.post("/api/models/iris/reload"), 404, "model_not_found")
    predict = error_of(_predict_iris(client), 404, "model_not_found")

    for error in (reload, predict):
        assert error["message"] == (
            "model 'iris' is not served here: this server serves only the models of "
            "server.models (sentiment)"
        )
    assert _statuses(client) == {"sentiment": "loaded"}


@pytest.mark.usefixtures("text_meta")
def test_a_new_model_that_fails_to_load_is_listed_as_failed(
    add_iris: Callable[[], ModelMetadata], registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"watch_interval_s": 0}, raise_server_exceptions=False)
    tamper(registry, add_iris())

    error = error_of(client.post("/api/models/iris/reload"), 503, "model_unavailable")

    assert error["message"].startswith("cannot load model 'iris'")
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["iris"]["status"] == "failed"
    assert error_of(_predict_iris(client), 503, "model_unavailable")
    assert client.get("/api/ready").status_code == 200  # sentiment still serves
    assert client.post("/api/predict", json={"text": POSITIVE}).status_code == 200
