"""GET /metrics: Prometheus text that counts what the server did."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES
from support.metrics import parse, scrape, value

from mlserve.schemas import ModelMetadata

from . import broken_models

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def test_request_counter_counts_every_predict_request(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(5):
        client.post("/api/predict", json={"text": "lovely", "model": "sentiment"})

    after = scrape(client)

    labels = {"method": "POST", "route": "/api/predict", "status": "200"}
    got = value(after, "mlserve_http_requests_total", **labels)
    assert got - value(before, "mlserve_http_requests_total", **labels) == 5
    assert value(after, "mlserve_http_request_duration_seconds_count", route="/api/predict") == 5


def test_requests_are_labelled_by_route_template_not_path(client: TestClient) -> None:
    client.get("/api/models/iris")
    client.get("/api/models/sentiment")
    client.get("/no/such/route/1")

    samples = scrape(client)

    routes = {s.labels["route"] for s in samples["mlserve_http_requests_total"]}
    assert "/api/models/{name}" in routes
    assert not any("iris" in r or "/no/such" in r for r in routes)
    assert value(samples, "mlserve_http_requests_total", route="/api/models/{name}") == 2


def test_predictions_are_counted_by_model_version_and_class(
    client: TestClient, iris_estimator: Any, iris_meta: ModelMetadata
) -> None:
    response = client.post("/api/predict/batch", json={"records": FLOWERS, "model": "iris"})
    assert response.status_code == 200
    client.post("/api/predict", json={"features": FLOWERS[0], "model": "iris"})

    samples = scrape(client)

    labels = [str(c) for c in iris_estimator.predict(FLOWERS + [FLOWERS[0]])]
    for cls in set(labels):
        got = value(
            samples,
            "mlserve_predictions_total",
            model="iris",
            version=str(iris_meta.version),
            predicted_class=cls,
        )
        assert got == labels.count(cls), cls


def test_batch_sizes_are_observed(model_server: TestClient) -> None:
    model_server.post("/api/predict/batch", json={"records": FLOWERS, "model": "iris"})
    model_server.post("/api/predict", json={"features": FLOWERS[0], "model": "iris"})

    samples = scrape(model_server)

    assert value(samples, "mlserve_batch_size_count", model="iris", version="1") == 2
    assert value(samples, "mlserve_batch_size_sum", model="iris", version="1") == 4
    assert value(samples, "mlserve_batch_size_bucket", model="iris", le="1.0") == 1
    assert value(samples, "mlserve_batch_size_bucket", model="iris", le="4.0") == 2
    assert value(samples, "mlserve_prediction_duration_seconds_count", model="iris") == 2


@pytest.fixture
def model_server(iris_meta: ModelMetadata, text_meta: ModelMetadata, serve: Any) -> TestClient:
    return serve()


def test_models_loaded_gauge_and_load_time(model_server: TestClient) -> None:
    samples = scrape(model_server)

    assert value(samples, "mlserve_models_loaded") == 2
    assert value(samples, "mlserve_model_load_duration_seconds_count", model="iris") == 1
    assert value(samples, "mlserve_model_load_duration_seconds_count", model="sentiment") == 1


def test_errors_are_counted_by_code(client: TestClient) -> None:
    client.post("/api/predict", json={"text": "x", "model": "nosuch"})
    client.post("/api/predict", json={"text": "x", "model": "nosuch"})
    client.post("/api/predict", json={"model": "sentiment"})

    samples = scrape(client)

    assert value(samples, "mlserve_errors_total", code="model_not_found") == 2
    assert value(samples, "mlserve_errors_total", code="invalid_input") == 1
    assert value(samples, "mlserve_http_requests_total", route="/api/predict", status="404") == 2


def test_in_flight_gauge_is_back_to_one_between_scrapes(client: TestClient) -> None:
    client.post("/api/predict", json={"text": "x", "model": "sentiment"})

    samples = scrape(client)

    assert value(samples, "mlserve_http_requests_in_flight") == 1  # the scrape itself


def test_two_apps_in_one_process_keep_separate_metrics(
    iris_meta: ModelMetadata, serve: Any
) -> None:
    first, second = serve(), serve()

    first.post("/api/predict", json={"features": FLOWERS[0]})

    assert value(scrape(first), "mlserve_predictions_total") == 1
    assert value(scrape(second), "mlserve_predictions_total") == 0


def test_a_body_over_the_limit_is_counted_as_payload_too_large(
    text_meta: ModelMetadata, serve: Any
) -> None:
    client = serve(server={"max_body_bytes": 1024})

    def chunks() -> Any:
        yield b'{"text": "' + b"x" * 2000 + b'"}'

    client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})

    samples = scrape(client)
    assert value(samples, "mlserve_errors_total", code="payload_too_large") == 1
    assert value(samples, "mlserve_http_requests_total", route="/api/predict", status="413") == 1


def test_queue_depth_counts_the_requests_waiting_for_the_model(
    registry: Any, gated_estimator: Any, serve: Any
) -> None:
    gate_name = uuid.uuid4().hex
    gate = broken_models.GATES[gate_name] = broken_models.Gate()
    try:
        registry.register_estimator(
            gated_estimator(gate_name), name="slow", feature_names=IRIS_FEATURES, check=False
        )
        client = serve()
        assert value(scrape(client), "mlserve_queue_depth", model="slow") == 0

        def predict() -> int:
            return client.post("/api/predict", json={"features": FLOWERS[0]}).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            held = pool.submit(predict)
            assert gate.entered.wait(10)
            queued = [pool.submit(predict) for _ in range(3)]
            deadline = time.monotonic() + 10
            while value(scrape(client), "mlserve_queue_depth", model="slow") < 3:
                assert time.monotonic() < deadline, "the queued requests never showed"
                time.sleep(0.01)  # polling interval of a bounded wait
            waiting = value(scrape(client), "mlserve_queue_depth", model="slow", version="1")
            gate.release.set()
            statuses = [held.result(10), *(q.result(10) for q in queued)]
    finally:
        gate.release.set()
        broken_models.GATES.pop(gate_name, None)

    assert waiting == 3
    assert statuses == [200] * 4
    assert value(scrape(client), "mlserve_queue_depth", model="slow") == 0


def test_request_latency_is_labelled_by_status(client: TestClient) -> None:
    client.post("/api/predict", json={"text": "lovely", "model": "sentiment"})
    client.post("/api/predict", json={"text": "x", "model": "nosuch"})

    samples = scrape(client)

    name = "mlserve_http_request_duration_seconds_count"
    assert value(samples, name, method="POST", route="/api/predict", status="200") == 1
    assert value(samples, name, method="POST", route="/api/predict", status="404") == 1


# ------------------------------------------------------------------------------ standard series
def test_process_python_and_build_series_are_exported(model_server: TestClient) -> None:
    import platform

    import sklearn

    from mlserve import __version__

    samples = scrape(model_server)

    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_gc_collections_total",
        "python_info",
    ):
        assert samples.get(name), name
    (build,) = samples["mlserve_build_info"]
    assert build.value == 1
    assert build.labels == {
        "version": __version__,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
    }


def test_no_created_series_are_exported(model_server: TestClient) -> None:
    model_server.post("/api/predict", json={"features": FLOWERS[0], "model": "iris"})

    text = model_server.get("/metrics").text

    assert "mlserve_predictions_total{" in text
    assert "_created" not in text


def test_model_info_has_one_series_per_loaded_version_and_drops_unloaded_ones(
    iris_meta: ModelMetadata, registry: Any, iris: tuple[Any, Any], serve: Any
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y)
    v2 = registry.register_estimator(tree, name="iris", feature_names=IRIS_FEATURES)
    client = serve()

    def loaded() -> dict[str, dict[str, str]]:
        return {s.labels["version"]: s.labels for s in scrape(client)["mlserve_model_info"]}

    assert loaded() == {
        "1": {"model": "iris", "version": "1", "sha256": iris_meta.sha256, "format": "joblib"}
    }
    # A version a request names is loaded beside the serving one.
    explicit = client.post("/api/predict", json={"features": FLOWERS[0], "model": "iris:2"})
    assert explicit.status_code == 200, explicit.text
    assert set(loaded()) == {"1", "2"}
    assert loaded()["2"]["sha256"] == v2.sha256

    registry.set_alias("iris", "production", 2)
    assert client.post("/api/models/iris/reload").status_code == 200
    assert set(loaded()) == {"2"}  # version 1 swapped out: gone from the next scrape
    assert all(s.value == 1 for s in scrape(client)["mlserve_model_info"])


def test_multiprocess_scrape_has_the_info_series_but_no_per_process_figures(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlserve.serving.metrics import ServerMetrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = ServerMetrics()

    samples = parse(metrics.render().decode())

    assert samples["mlserve_build_info"][0].value == 1
    assert samples["python_info"]
    assert "mlserve_model_info" not in samples  # no model loaded: the family has no series
    assert not [name for name in samples if name.startswith(("process_", "python_gc_"))]
