"""A model version whose predictions keep failing is degraded: 503 fast, health says so, and
one call after the cooldown decides whether it recovers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.clock import Clock
from support.data import FLOWERS, IRIS_FEATURES
from support.metrics import scrape, value
from support.wait import wait_for

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from . import broken_models, flaky_models
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


# The second request of test_requests_queued_on_a_split_version_as_it_degrades_*: by path.
SECOND: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "fast": ("/api/predict", {"model": "iris", "features": FLOWER}, {}),
    "route": ("/api/predict", {"model": "iris", "features": FLOWER}, PATHS["route"]),
    "batch": ("/api/predict/batch", {"model": "iris", "records": FLOWERS}, {}),
    "v2": (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [FLOWER]}]},
        {},
    ),
}


@pytest.fixture
def gated_candidate(
    registry: Registry, iris_meta: ModelMetadata, iris: tuple[Any, Any]
) -> Iterator[broken_models.Gate]:
    """iris 1 (production) and iris 2, whose calls wait for the returned gate and then fail."""
    name = uuid.uuid4().hex
    x, y = iris
    failing = broken_models.GatedClassifier(gate=name, fail=True).fit(x, y)
    registry.register_estimator(failing, name="iris", feature_names=IRIS_FEATURES, check=False)
    gate = broken_models.GATES[name] = broken_models.Gate()
    yield gate
    gate.release.set()
    broken_models.GATES.pop(name, None)


@pytest.mark.parametrize("pinned", [False, True], ids=["split", "pinned"])
@pytest.mark.parametrize("path", list(SECOND))
def test_requests_queued_on_a_split_version_as_it_degrades_are_answered_by_the_serving_one(
    gated_candidate: broken_models.Gate,
    serve: Callable[..., TestClient],
    path: str,
    pinned: bool,
) -> None:
    """A split sends every client to version 2. One request is in its model call and a second
    one waits behind it when the call fails and opens the breaker. The split's share goes to
    the serving version once its pick is degraded, so the second request is answered by
    version 1 rather than failing fast; one that named version 2 gets the 503 it asked for."""
    client = serve(
        raise_server_exceptions=False,
        traffic={"failure_threshold": 1, "splits": {"iris": {"2": 1}}},
    )
    url, body, headers = SECOND[path]
    if pinned:
        url = url.replace("/models/iris/", "/models/iris/versions/2/")
        body = body if path == "v2" else {**body, "model": "iris:2"}
    answers: dict[str, Any] = {}

    def send(key: str, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        answers[key] = client.post(url, json=body, headers=headers)

    first = threading.Thread(
        target=send, args=("first", "/api/predict", {"model": "iris", "features": FLOWER}, {})
    )
    first.start()
    assert gated_candidate.entered.wait(10), "version 2 was never called"
    second = threading.Thread(target=send, args=("second", url, body, headers))
    second.start()
    wait_for(
        lambda: value(scrape(client), "mlserve_queue_depth", model="iris", version="2") == 1,
        "the second request waiting on version 2",
    )
    gated_candidate.release.set()
    first.join(10)
    second.join(10)

    error_of(answers["first"], 500, "prediction_failed")  # the call that failed
    answer = answers["second"]
    if pinned and path == "v2":  # the V2 protocol's error body: {"error": message}
        assert answer.status_code == 503 and "degraded" in answer.json()["error"], answer.text
        return
    if pinned:
        error_of(answer, 503, "model_degraded")
        return
    assert answer.status_code == 200, answer.text
    version = answer.json()["model_version" if path == "v2" else "version"]
    assert str(version) == "1"
