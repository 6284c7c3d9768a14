"""/api/live, /api/ready, /api/health (real smoke predictions) and /api/health/detailed."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, tamper

from mlserve import __version__
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata


def test_live_answers_200(client: TestClient) -> None:
    response = client.get("/api/live")

    assert response.status_code == 200
    assert response.json() == {"live": True}


def test_ready_is_200_once_models_are_loaded(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    response = client.get("/api/ready")

    assert response.status_code == 200, response.text
    assert response.json() == {"ready": True, "models": dict.fromkeys(all_models, "loaded")}


def test_ready_is_503_when_no_model_could_be_loaded(
    iris_meta: ModelMetadata, registry: Registry, serve: Any
) -> None:
    tamper(registry, iris_meta)
    client = serve()

    response = client.get("/api/ready")

    assert response.status_code == 503, response.text
    assert response.json() == {"ready": False, "models": {"iris": "failed"}}


def test_ready_is_503_with_an_empty_registry(serve: Any) -> None:
    client = serve()

    assert client.get("/api/ready").status_code == 503
    assert client.get("/api/live").status_code == 200


def test_ready_is_200_when_one_model_of_several_failed(
    all_models: dict[str, ModelMetadata], registry: Registry, serve: Any
) -> None:
    tamper(registry, all_models["iris"])
    client = serve()

    response = client.get("/api/ready")

    assert response.status_code == 200, response.text
    assert response.json()["models"]["iris"] == "failed"


def test_health_is_healthy_when_every_model_answers_a_smoke_prediction(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    response = client.get("/api/health")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert body["uptime_s"] >= 0
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == set(all_models)
    for name, item in models.items():
        assert item["status"] == "healthy"
        assert item["version"] == all_models[name].version
        assert item["latency_ms"] >= 0


def test_health_is_degraded_with_one_tampered_model_and_the_others_still_serve(
    all_models: dict[str, ModelMetadata], registry: Registry, serve: Any
) -> None:
    tamper(registry, all_models["svc"])
    client = serve()

    response = client.get("/api/health")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    models = {m["name"]: m for m in body["models"]}
    assert models["svc"]["status"] == "degraded"
    assert models["svc"]["error"]
    assert models["iris"]["status"] == "healthy"
    ok = client.post("/api/predict", json={"features": [5.0, 3.0, 1.5, 0.2], "model": "iris"})
    assert ok.status_code == 200, ok.text
    down = client.post("/api/predict", json={"features": [5.0, 3.0, 1.5, 0.2], "model": "svc"})
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "model_unavailable"
    assert str(registry.root) not in down.text


def test_health_is_degraded_when_a_loaded_model_fails_its_smoke_prediction(
    all_models: dict[str, ModelMetadata], register: Any, broken_estimator: Any, serve: Any
) -> None:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    client = serve()

    body = client.get("/api/health").json()

    models = {m["name"]: m for m in body["models"]}
    assert body["status"] == "degraded"
    assert models["broken"]["status"] == "degraded"
    assert models["broken"]["version"] == 1
    assert models["sentiment"]["status"] == "healthy"


def test_health_is_unhealthy_503_when_no_model_can_predict(
    register: Any, broken_estimator: Any, serve: Any
) -> None:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    client = serve()

    response = client.get("/api/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


def test_detailed_health_reports_process_and_per_model_details(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    response = client.get("/api/health/detailed")

    assert response.status_code == 200, response.text
    body = response.json()
    process = body["process"]
    assert process["rss_bytes"] > 10_000_000
    assert process["cpu_seconds"] > 0
    assert process["cpu_percent"] >= 0
    assert process["threads"] >= 1
    assert process["open_requests"] >= 1  # this one
    for item in body["models"]:
        assert datetime.fromisoformat(item["loaded_at"]).tzinfo is not None
        assert item["queue_depth"] == 0


def test_detailed_health_prediction_counts_increase_after_predictions(client: TestClient) -> None:
    def counts() -> dict[str, int]:
        body = client.get("/api/health/detailed").json()
        return {m["name"]: m["predictions"] for m in body["models"]}

    before = counts()
    for _ in range(3):
        client.post("/api/predict", json={"text": "lovely staff", "model": "sentiment"})
    client.post("/api/predict", json={"features": [5.0, 3.0, 1.5, 0.2], "model": "iris"})
    after = counts()

    assert after["sentiment"] == before["sentiment"] + 3
    assert after["iris"] == before["iris"] + 1
    assert after["petal"] == before["petal"]


def test_detailed_health_cpu_percent_is_measured_between_calls(client: TestClient) -> None:
    client.get("/api/health/detailed")
    # burn some CPU in this process (the app runs in it) so the next reading has something
    sum(i * i for i in range(2_000_000))

    process = client.get("/api/health/detailed").json()["process"]

    assert process["cpu_percent"] > 0


def test_ready_is_503_while_draining_for_shutdown(client: TestClient) -> None:
    state = client.app.state.mlserve  # type: ignore[attr-defined]

    state.draining = True

    assert client.get("/api/ready").status_code == 503
    assert client.get("/api/live").status_code == 200


def test_sigterm_turns_readiness_off_and_still_reaches_the_servers_handler() -> None:
    import signal

    from mlserve.server.app import drain_on_signals

    class FakeState:
        draining = False

    received: list[int] = []

    def server_handler(signum: int, frame: Any) -> None:  # stands in for uvicorn's
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, server_handler)
    try:
        state: Any = FakeState()
        restore = drain_on_signals(state)
        signal.raise_signal(signal.SIGTERM)
        restore()
        assert state.draining is True
        assert received == [signal.SIGTERM]  # the server's handler still runs the shutdown
        assert signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_with_background_loading_live_answers_and_ready_waits_for_the_models(
    iris_meta: ModelMetadata, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from mlserve.registry import Registry as RegistryClass
    from mlserve.server.app import create_app

    release = threading.Event()
    real_load = RegistryClass.load

    def slow_load(self: RegistryClass, *args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(RegistryClass, "load", slow_load)
    app = create_app(make_settings(), background_load=True)

    with TestClient(app, raise_server_exceptions=False) as client:
        live = client.get("/api/live")
        not_ready = client.get("/api/ready")
        unavailable = client.post("/api/predict", json={"features": [5.0, 3.0, 1.5, 0.2]})
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/api/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.01)
        served = client.post("/api/predict", json={"features": [5.0, 3.0, 1.5, 0.2]})

    assert live.status_code == 200
    assert not_ready.status_code == 503
    assert not_ready.json()["models"] == {"iris": "loading"}
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "model_unavailable"
    assert "retry-after" in unavailable.headers
    assert served.status_code == 200
