"""A model version whose predictions keep failing is degraded: 503 fast, health says so, and
one call after the cooldown decides whether it recovers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.clock import Clock
from support.data import FLOWERS, IRIS_FEATURES
from support.metrics import scrape, value

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from . import flaky_models
from .conftest import error_of
from .traffic_helpers import PATHS

FLOWER = FLOWERS[0]
THRESHOLD = 3
COOLDOWN = 30.0


@pytest.fixture
def switch() -> Iterator[str]:
    name = uuid.uuid4().hex
    flaky_models.FAILING[name] = True
    yield name
    flaky_models.FAILING.pop(name, None)
    flaky_models.CALLS.pop(name, None)


@pytest.fixture
def flaky(
    switch: str,
    registry: Registry,
    iris: tuple[Any, Any],
    iris_meta: ModelMetadata,
    serve: Callable[..., TestClient],
) -> tuple[TestClient, Clock]:
    """Serves iris (healthy) and flaky (failing until its switch is turned off)."""
    x, y = iris
    estimator = flaky_models.FlakyClassifier(switch=switch).fit(x, y)
    flaky_models.FAILING[switch] = False  # registration may try the model
    registry.register_estimator(
        estimator, name="flaky", aliases=["production"], feature_names=IRIS_FEATURES
    )
    flaky_models.FAILING[switch] = True
    client = serve(
        raise_server_exceptions=False,
        traffic={"failure_threshold": THRESHOLD, "failure_cooldown_s": COOLDOWN},
    )
    clock = Clock()
    client.app.state.mlserve.manager.clock = clock  # type: ignore[attr-defined]
    return client, clock


def _predict(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/api/predict", json={"features": FLOWER, "model": "flaky"}, headers=headers or {}
    )


def _trip(client: TestClient) -> None:
    for _ in range(THRESHOLD):
        error_of(_predict(client), 500, "prediction_failed")


@pytest.mark.parametrize("path", PATHS)
def test_breaker_opens_after_consecutive_failures_and_fails_fast(
    flaky: tuple[TestClient, Clock], switch: str, path: str
) -> None:
    client, _ = flaky
    _trip(client)
    calls = flaky_models.CALLS[switch]

    response = _predict(client, PATHS[path])

    error = error_of(response, 503, "model_degraded")
    assert "degraded" in error["message"]
    assert "3 consecutive failed predictions" in error["message"]
    assert response.headers["retry-after"] == "30"
    assert flaky_models.CALLS[switch] == calls  # the model was not called
    batch = client.post("/api/predict/batch", json={"records": FLOWERS, "model": "flaky"})
    error_of(batch, 503, "model_degraded")
    assert flaky_models.CALLS[switch] == calls
    samples = scrape(client)
    assert value(samples, "mlserve_model_degraded", model="flaky", version="1") == 1
    assert value(samples, "mlserve_errors_total", code="model_degraded") == 2


def test_other_models_keep_serving(flaky: tuple[TestClient, Clock]) -> None:
    client, _ = flaky
    _trip(client)

    response = client.post("/api/predict", json={"features": FLOWER, "model": "iris"})

    assert response.status_code == 200


def test_health_and_model_list_report_the_degraded_version(
    flaky: tuple[TestClient, Clock],
) -> None:
    client, _ = flaky
    _trip(client)

    health = client.get("/api/health")
    detailed = client.get("/api/health/detailed")
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}

    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    models = {m["name"]: m for m in health.json()["models"]}
    assert models["flaky"]["status"] == "degraded"
    assert "3 consecutive failed predictions" in models["flaky"]["error"]
    assert models["iris"]["status"] == "healthy"
    assert {m["name"]: m["status"] for m in detailed.json()["models"]}["flaky"] == "degraded"
    assert listed["flaky"]["status"] == "degraded"
    assert "3 consecutive failed predictions" in listed["flaky"]["error"]
    assert listed["iris"]["status"] == "loaded"
    assert client.get("/api/ready").status_code == 200  # still serving the other model


def test_after_the_cooldown_one_success_closes_it(
    flaky: tuple[TestClient, Clock], switch: str
) -> None:
    client, clock = flaky
    _trip(client)
    clock.advance(COOLDOWN - 1)
    error_of(_predict(client), 503, "model_degraded")
    flaky_models.FAILING[switch] = False
    clock.advance(1)

    probe = _predict(client)

    assert probe.status_code == 200, probe.text
    assert _predict(client).status_code == 200
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["flaky"]["status"] == "loaded"
    assert value(scrape(client), "mlserve_model_degraded", model="flaky", version="1") == 0
    health = {m["name"]: m for m in client.get("/api/health").json()["models"]}
    assert health["flaky"]["status"] == "healthy"


def test_a_failed_probe_opens_it_again(flaky: tuple[TestClient, Clock], switch: str) -> None:
    client, clock = flaky
    _trip(client)
    clock.advance(COOLDOWN)
    calls = flaky_models.CALLS[switch]

    error_of(_predict(client), 500, "prediction_failed")  # the probe reached the model
    error_of(_predict(client), 503, "model_degraded")

    assert flaky_models.CALLS[switch] == calls + 1
