"""Shadow traffic: a candidate version gets a copy of live requests off the request path; its
answers are compared (metrics) and never returned; its failures never touch live traffic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import FLOWERS, IRIS_FEATURES
from support.metrics import scrape, value
from support.wait import wait_for

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.serving import traffic as traffic_module

from . import broken_models
from .traffic_helpers import PATHS, tree_version

SETOSA = [5.1, 3.5, 1.4, 0.2]  # both versions say setosa
VIRGINICA = [6.7, 3.0, 5.2, 2.3]  # the depth-1 tree never says virginica: they disagree


def _shadow_total(client: TestClient, **labels: str) -> float:
    return value(scrape(client), "mlserve_shadow_predictions_total", **labels)


@pytest.fixture
def shadowed(
    iris_meta: ModelMetadata,
    registry: Registry,
    iris: tuple[Any, Any],
    serve: Callable[..., TestClient],
) -> TestClient:
    """iris:1 serves; iris:2 (a depth-1 tree) shadows it."""
    tree_version(registry, iris)
    return serve(traffic={"shadow": {"iris": 2}})


@pytest.mark.parametrize("path", PATHS)
def test_shadow_agreement_and_latency_are_exported(shadowed: TestClient, path: str) -> None:
    for features in [SETOSA, SETOSA, VIRGINICA]:
        response = shadowed.post("/api/predict", json={"features": features}, headers=PATHS[path])
        assert response.status_code == 200, response.text

    wait_for(lambda: _shadow_total(shadowed) == 3, "3 shadow predictions")
    samples = scrape(shadowed)
    labels = {"model": "iris", "version": "1", "shadow_version": "2"}
    name = "mlserve_shadow_predictions_total"
    assert value(samples, name, agreement="agree", **labels) == 2
    assert value(samples, name, agreement="disagree", **labels) == 1
    assert value(samples, "mlserve_shadow_duration_seconds_count", shadow_version="2") >= 1
    assert value(samples, "mlserve_shadow_dropped_total") == 0


def test_shadow_answers_are_never_returned(shadowed: TestClient) -> None:
    response = shadowed.post("/api/predict", json={"features": VIRGINICA})

    assert response.json()["version"] == 1
    assert response.json()["prediction"] == "virginica"
    wait_for(lambda: _shadow_total(shadowed, agreement="disagree") == 1, "the shadow's answer")
    # Shadow calls are not predictions served.
    samples = scrape(shadowed)
    assert value(samples, "mlserve_predictions_total", model="iris", version="2") == 0


def test_batch_requests_are_mirrored_row_by_row(shadowed: TestClient) -> None:
    response = shadowed.post("/api/predict/batch", json={"records": FLOWERS})

    assert response.status_code == 200
    wait_for(lambda: _shadow_total(shadowed) == len(FLOWERS), "every row mirrored")


def test_requests_for_the_shadow_version_itself_are_not_mirrored(shadowed: TestClient) -> None:
    shadowed.post("/api/predict", json={"features": SETOSA, "model": "iris:2"})
    shadowed.post("/api/predict", json={"features": SETOSA})

    wait_for(lambda: _shadow_total(shadowed) == 1, "one mirrored request")
    assert _shadow_total(shadowed, version="2") == 0


def test_a_failing_shadow_does_not_affect_live_answers(
    iris_meta: ModelMetadata,
    registry: Registry,
    broken_estimator: Any,
    serve: Callable[..., TestClient],
) -> None:
    registry.register_estimator(
        broken_estimator, name="iris", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(traffic={"shadow": {"iris": 2}, "failure_threshold": 2})

    for _ in range(6):
        response = client.post("/api/predict", json={"features": SETOSA})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1

    wait_for(
        lambda: value(scrape(client), "mlserve_shadow_errors_total", shadow_version="2") == 6,
        "6 shadow errors",
    )
    assert _shadow_total(client) == 0
    # The shadow's own breaker opened; the live version is untouched.
    samples = scrape(client)
    assert value(samples, "mlserve_model_degraded", model="iris", version="2") == 1
    assert value(samples, "mlserve_model_degraded", model="iris", version="1") == 0
    health = client.get("/api/health").json()
    assert health["status"] == "healthy"


def test_shadow_set_and_cleared_at_runtime(
    iris_meta: ModelMetadata,
    registry: Registry,
    iris: tuple[Any, Any],
    serve: Callable[..., TestClient],
) -> None:
    tree_version(registry, iris)
    client = serve()

    put = client.put("/api/models/iris/traffic", json={"shadow": 2})
    assert put.status_code == 200, put.text
    assert put.json()["shadow"] == 2
    client.post("/api/predict", json={"features": SETOSA})
    wait_for(lambda: _shadow_total(client) == 1, "a mirrored request")

    client.delete("/api/models/iris/traffic")
    client.post("/api/predict", json={"features": SETOSA})
    client.get("/api/health")  # a round trip for any stray mirror to land
    assert _shadow_total(client) == 1


def test_a_full_shadow_queue_drops_and_counts_instead_of_slowing_live_traffic(
    iris_meta: ModelMetadata,
    registry: Registry,
    gated_estimator: Callable[[str], Any],
    gate: tuple[str, broken_models.Gate],
    serve: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, held = gate
    monkeypatch.setattr(traffic_module, "SHADOW_MAX_QUEUE", 3)
    registry.register_estimator(
        gated_estimator(name), name="iris", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(traffic={"shadow": {"iris": 2}})
    try:
        for _ in range(10):  # the shadow is stuck in its first call the whole time
            response = client.post("/api/predict", json={"features": SETOSA})
            assert response.status_code == 200, response.text
        assert held.entered.wait(10), "the shadow never got the first mirrored request"
        dropped = value(scrape(client), "mlserve_shadow_dropped_total", shadow_version="2")
        assert 5 <= dropped <= 9
    finally:
        held.release.set()
    wait_for(
        lambda: _shadow_total(client) + value(scrape(client), "mlserve_shadow_dropped_total") == 10,
        "the queued mirrors to finish",
    )
