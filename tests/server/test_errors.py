"""Every failure has one shape, {"error": {"code", "message", "request_id"}}, and its status."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.schemas import ModelMetadata

from .broken_models import SECRET_DETAIL
from .conftest import error_of

FLOWER = [6.1, 2.8, 4.7, 1.2]


# ---------------------------------------------------------------------------- 404
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": "hi", "model": "nosuch"}, "nosuch"),
        ({"features": FLOWER, "model": "iris:7"}, "7"),
        ({"features": FLOWER, "model": "iris@canary"}, "canary"),
        ({"features": FLOWER, "model": "iris", "model_version": 9}, "9"),
        ({"features": FLOWER, "model": "iris", "model_version": "canary"}, "canary"),
    ],
)
def test_unknown_model_version_or_alias_is_404(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    error = error_of(client.post("/api/predict", json=body), 404)

    assert fragment in error["message"]


def test_unknown_model_in_batch_is_404(client: TestClient) -> None:
    error_of(client.post("/api/predict/batch", json={"texts": ["a"], "model": "nosuch"}), 404)


def test_unknown_route_is_404_in_the_error_shape(client: TestClient) -> None:
    error_of(client.get("/api/nothing-here"), 404)


def test_malformed_model_reference_is_422(client: TestClient) -> None:
    error = error_of(client.post("/api/predict", json={"text": "x", "model": "a b c"}), 422)

    assert "a b c" in error["message"]


# ---------------------------------------------------------------------------- 422 input
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "sentiment"}, "text"),
        ({"text": 42, "model": "sentiment"}, "text"),
        ({"text": ["a", "b"], "model": "sentiment"}, "text"),
        ({"text": "hi", "features": FLOWER, "model": "sentiment"}, "features"),
        ({"text": "hi", "model": "sentiment", "colour": "red"}, "colour"),
        ({"features": FLOWER, "model": "sentiment"}, "text"),
        ({"text": "hi", "model": "iris"}, "features"),
        ({"features": "1,2,3,4", "model": "iris"}, "features"),
        ({"features": [1, 2, "x", 4], "model": "iris"}, "features"),
        ({"features": {"sepal_length": "wide"}, "model": "iris"}, "features"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    error = error_of(client.post("/api/predict", json=body), 422, "invalid_input")

    assert fragment in error["message"]


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/predict", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert "JSON" in error_of(response, 422, "invalid_input")["message"]


def test_text_over_max_text_length_is_422(text_meta: ModelMetadata, serve: Any) -> None:
    client = serve(server={"max_text_length": 20})

    ok = client.post("/api/predict", json={"text": "x" * 20})
    too_long = client.post("/api/predict", json={"text": "x" * 21})

    assert ok.status_code == 200, ok.text
    error = error_of(too_long, 422, "invalid_input")
    assert "text" in error["message"] and "20" in error["message"]


@pytest.mark.parametrize(
    "features",
    [
        [1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        {"sepal_length": 1.0, "sepal_width": 2.0, "petal_length": 3.0},
        {"sepal_length": 1.0, "sepal_width": 2.0, "petal_length": 3.0, "petal_width": 1, "x": 0},
        {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
    ],
)
def test_wrong_feature_count_or_names_is_422_naming_the_expected_features(
    client: TestClient, features: Any
) -> None:
    response = client.post("/api/predict", json={"features": features, "model": "iris"})

    error = error_of(response, 422, "invalid_input")
    for name in IRIS_FEATURES:
        assert name in error["message"]


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_feature_is_422(client: TestClient, value: float) -> None:
    body = json.dumps({"features": [value, 1, 1, 1], "model": "iris"})  # JSON allows Infinity

    response = client.post(
        "/api/predict", content=body, headers={"content-type": "application/json"}
    )

    error_of(response, 422, "invalid_input")


def test_model_is_required_when_several_models_take_the_input_and_none_is_default(
    client: TestClient,
) -> None:
    # Three tabular models (iris, petal, svc) take features; only sentiment takes text.
    response = client.post("/api/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    error = error_of(response, 422, "invalid_input")

    assert "model" in error["message"] and "server.default_model" in error["message"]
    for name in ("iris", "petal", "svc"):
        assert name in error["message"]
    assert "sentiment" not in error["message"]


# ---------------------------------------------------------------------------- 413
def test_body_over_max_body_bytes_is_413_with_content_length(
    text_meta: ModelMetadata, serve: Any
) -> None:
    client = serve(server={"max_body_bytes": 2048, "max_text_length": 100_000})

    response = client.post("/api/predict", json={"text": "x" * 4000})

    error_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("path", "field"), [("/api/predict", "text"), ("/api/predict/batch", "texts")]
)
def test_chunked_body_over_max_body_bytes_is_413(
    text_meta: ModelMetadata, serve: Any, path: str, field: str
) -> None:
    client = serve(server={"max_body_bytes": 2048, "max_text_length": 100_000})
    opening = b'{"texts": ["' if field == "texts" else b'{"text": "'

    def chunks() -> Iterator[bytes]:
        yield opening
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}' if field == "texts" else b'"}'

    response = client.post(path, content=chunks(), headers={"content-type": "application/json"})

    assert "content-length" not in response.request.headers
    error_of(response, 413, "payload_too_large")


def test_chunked_body_under_the_limit_is_served(text_meta: ModelMetadata, serve: Any) -> None:
    client = serve(server={"max_body_bytes": 2048})

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"lovely staff"
        yield b'"}'

    response = client.post(
        "/api/predict", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- 500
@pytest.fixture
def broken_client(
    all_models: dict[str, ModelMetadata],
    register: Any,
    broken_estimator: Any,
    serve: Any,
) -> TestClient:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    return serve(raise_server_exceptions=False)


def _assert_no_internals(error: dict[str, Any]) -> None:
    message = error["message"]
    for leak in (SECRET_DETAIL, "hunter2", "/srv", "RuntimeError", "Traceback", ".py"):
        assert leak not in message, message


def test_model_failure_is_500_without_internals(broken_client: TestClient) -> None:
    response = broken_client.post("/api/predict", json={"features": FLOWER, "model": "broken"})

    error = error_of(response, 500, "prediction_failed")
    _assert_no_internals(error)
    assert SECRET_DETAIL not in response.text


def test_model_failure_in_a_batch_is_500_without_internals(broken_client: TestClient) -> None:
    response = broken_client.post(
        "/api/predict/batch", json={"records": [FLOWER, FLOWER], "model": "broken"}
    )

    _assert_no_internals(error_of(response, 500, "prediction_failed"))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/predict/batch", {"records": [FLOWER, FLOWER], "model": "broken"}),
        ("/api/predict", {"features": FLOWER, "model": "broken"}),  # the fast lane
    ],
)
def test_a_server_error_is_logged_with_its_request_id(
    broken_client: TestClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
) -> None:
    with caplog.at_level(logging.WARNING, logger="mlserve"):
        response = broken_client.post(path, json=body, headers={"x-request-id": "trace-500"})

    error_of(response, 500, "prediction_failed")
    # One error renderer logs for every path (routes and the fast lane alike).
    logged = [r for r in caplog.records if r.name == "mlserve.server.errors"]
    assert [r.getMessage() for r in logged] == [
        "[trace-500] prediction_failed: model broken:1 failed to predict"
    ]
    assert logged[0].request_id == "trace-500"  # a field of its own in JSON logs


def test_an_unhandled_error_is_logged_with_its_request_id(
    all_models: dict[str, ModelMetadata],
    serve: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlserve.serving.manager import ModelManager

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError(SECRET_DETAIL)

    monkeypatch.setattr(ModelManager, "get", explode)
    client = serve(raise_server_exceptions=False)

    with caplog.at_level(logging.ERROR, logger="mlserve"):
        response = client.post(
            "/api/predict",
            json={"features": FLOWER, "model": "iris"},
            headers={"x-request-id": "trace-bug"},
        )

    error_of(response, 500, "internal_error")
    logged = [r for r in caplog.records if r.name == "mlserve.server.middleware.context"]
    assert len(logged) == 1 and logged[0].getMessage().startswith("[trace-bug] ")
    assert logged[0].exc_info is not None


def test_a_failing_model_does_not_affect_the_others(broken_client: TestClient) -> None:
    broken_client.post("/api/predict", json={"features": FLOWER, "model": "broken"})

    response = broken_client.post("/api/predict", json={"features": FLOWER, "model": "iris"})

    assert response.status_code == 200, response.text


def test_unexpected_exception_is_a_plain_500(
    all_models: dict[str, ModelMetadata], serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlserve.serving.manager import ModelManager

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError(SECRET_DETAIL)

    monkeypatch.setattr(ModelManager, "get", explode)
    client = serve(raise_server_exceptions=False)

    response = client.post("/api/predict", json={"features": FLOWER, "model": "iris"})

    error = error_of(response, 500, "internal_error")
    _assert_no_internals(error)


def test_wrong_method_is_405_in_the_error_shape(client: TestClient) -> None:
    error_of(client.get("/api/predict"), 405, "method_not_allowed")


# ---------------------------------------------------------------------------- missing values
def test_null_feature_for_a_model_without_missing_value_support_is_422(
    client: TestClient,
) -> None:
    features = {"sepal_length": 5.0, "sepal_width": None, "petal_length": 1.4, "petal_width": 0.2}

    response = client.post("/api/predict", json={"features": features, "model": "iris"})

    error = error_of(response, 422, "invalid_input")
    assert "sepal_width" in error["message"] and "missing" in error["message"]


def test_null_feature_in_a_batch_is_422_naming_the_feature(client: TestClient) -> None:
    records = [FLOWER, [5.0, 3.0, None, 0.2]]

    response = client.post("/api/predict/batch", json={"records": records, "model": "iris"})

    assert "petal_length" in error_of(response, 422, "invalid_input")["message"]


def test_null_feature_for_a_nan_aware_model_is_predicted(
    register: Any, iris: tuple[Any, Any], serve: Any
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    register(
        HistGradientBoostingClassifier(max_iter=3).fit(*iris),
        "hgb",
        feature_names=IRIS_FEATURES,
    )
    client = serve()

    response = client.post("/api/predict", json={"features": [5.0, None, 1.4, 0.2]})

    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- loading
def test_an_unexpected_error_loading_one_model_leaves_the_others_serving(
    all_models: dict[str, ModelMetadata], serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlserve.serving.manager as manager_module

    real = manager_module.LoadedModel

    def flaky(estimator: Any, metadata: ModelMetadata, **kwargs: Any) -> Any:
        if metadata.name == "svc":
            raise KeyError(SECRET_DETAIL)
        return real(estimator, metadata, **kwargs)

    monkeypatch.setattr(manager_module, "LoadedModel", flaky)
    client = serve(raise_server_exceptions=False)

    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    down = client.post("/api/predict", json={"features": FLOWER, "model": "svc"})
    up = client.post("/api/predict", json={"features": FLOWER, "model": "iris"})

    assert listed["svc"]["status"] == "failed"
    assert SECRET_DETAIL not in listed["svc"]["error"]
    _assert_no_internals(error_of(down, 503, "model_unavailable"))
    assert up.status_code == 200
    assert client.get("/api/ready").status_code == 200


# ---------------------------------------------------------------------------- 503 overload
@contextlib.contextmanager
def full_queue(client: TestClient, held: Any, body: dict[str, Any]) -> Iterator[list[int]]:
    """With batching.max_queue = 1: one `body` prediction held in the gated model and one
    queued behind it. Inside the block the model's queue is full; on leaving it the model is
    released and the list yielded receives the two statuses."""
    batcher = client.app.state.mlserve.manager.models[body["model"]].current.batcher  # type: ignore[attr-defined]
    statuses: list[int] = []

    def predict() -> int:
        return client.post("/api/predict", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(predict)
        assert held.entered.wait(10)
        second = pool.submit(predict)
        deadline = time.monotonic() + 10
        while batcher.queue_depth < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        try:
            yield statuses
        finally:
            held.release.set()
        statuses += [first.result(10), second.result(10)]


def test_requests_over_the_queue_limit_get_503_with_retry_after(
    registry: Any, gated_estimator: Any, gate: tuple[str, Any], serve: Any
) -> None:
    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="slow", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(batching={"max_queue": 1})

    with full_queue(client, held, {"features": FLOWER, "model": "slow"}) as statuses:
        shed = client.post("/api/predict", json={"features": FLOWER})

    error_of(shed, 503, "overloaded")
    assert int(shed.headers["retry-after"]) >= 1
    assert statuses == [200, 200]


def test_a_full_queue_sheds_predictions_before_reading_their_body(
    registry: Any, gated_estimator: Any, gate: tuple[str, Any], serve: Any
) -> None:
    """While every queue a prediction could reach is full, POST /api/predict, /batch and V2
    infer are answered 503 at once, without parsing the body (an invalid one too), keeping the
    connection; other routes, and models with room, are served as usual."""
    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="slow", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(batching={"max_queue": 1})
    manager = client.app.state.mlserve.manager  # type: ignore[attr-defined]
    malformed_body = {"content": b"{not json", "headers": {"content-type": "application/json"}}

    with full_queue(client, held, {"features": FLOWER, "model": "slow"}) as statuses:
        assert manager.saturated()
        malformed = client.post("/api/predict", **malformed_body)
        batch = client.post("/api/predict/batch", json={"records": [FLOWER]})
        v2 = client.post("/v2/models/slow/infer", content=b"{}")
        listed = client.get("/api/models")
    # With room again, the same malformed body gets its usual answer.
    after = client.post("/api/predict", **malformed_body)

    for shed in (malformed, batch):
        error_of(shed, 503, "overloaded")
        assert shed.headers["retry-after"] == "1"
        assert shed.headers.get("connection") != "close"
    assert v2.status_code == 503 and set(v2.json()) == {"error"}  # the V2 error shape
    assert listed.status_code == 200
    assert statuses == [200, 200]
    error_of(after, 422)


def test_a_model_with_room_is_not_shed_because_another_is_full(
    registry: Any, gated_estimator: Any, iris_estimator: Any, gate: tuple[str, Any], serve: Any
) -> None:
    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="slow", feature_names=IRIS_FEATURES, check=False
    )
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    client = serve(batching={"max_queue": 1})
    manager = client.app.state.mlserve.manager  # type: ignore[attr-defined]
    v2_body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": FLOWER}]}

    with full_queue(client, held, {"features": FLOWER, "model": "slow"}) as statuses:
        other = client.post("/api/predict", json={"features": FLOWER, "model": "iris"})
        full = client.post("/api/predict", json={"features": FLOWER, "model": "slow"})
        v2_other = client.post("/v2/models/iris/infer", json=v2_body)

    assert statuses == [200, 200]
    assert not manager.saturated()
    assert other.status_code == 200, other.text
    assert v2_other.status_code == 200, v2_other.text
    error_of(full, 503, "overloaded")  # shed by the model's own queue, after parsing
