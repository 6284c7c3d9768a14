"""POST /api/predict/compare: one input, several models at once, one model's error isolated."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.config import Settings
from mlserve.keys import KeyStore
from mlserve.schemas import CompareResponse, ModelMetadata
from mlserve.schemas.compare import MAX_COMPARE_MODELS
from mlserve.server.auth import AccessPolicy
from mlserve.serving.service import PredictionService

from . import broken_models
from .broken_models import SECRET_DETAIL
from .conftest import error_of

PATH = "/api/predict/compare"
FLOWER = [6.1, 2.8, 4.7, 1.2]
FLOWER_BY_NAME = dict(zip(IRIS_FEATURES, FLOWER, strict=True))
TEXT = "the staff were lovely and it arrived early"


def compare(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert data["request_id"] == response.headers["x-request-id"]
    CompareResponse.model_validate(data)  # what the client reads
    return data


def predicted(client: TestClient, **body: Any) -> dict[str, Any]:
    """What POST /api/predict answers for the same input and model."""
    response = client.post("/api/predict", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def item_error(item: dict[str, Any], model: str, code: str, request_id: str) -> dict[str, Any]:
    """Assert one item is `{"model", "error": {"code", "message", "request_id"}}`."""
    assert set(item) == {"model", "error"}, item
    assert item["model"] == model
    error: dict[str, Any] = item["error"]
    assert set(error) == {"code", "message", "request_id"}, error
    assert error["code"] == code, error
    assert error["message"]
    assert error["request_id"] == request_id
    return error


# ---------------------------------------------------------------------------- answers
def test_several_models_answer_in_order_as_predict_answers_each(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    models = ["svc", "iris", "iris@production", f"iris:{all_models['iris'].version}"]

    body = compare(client, features=FLOWER, models=models)

    results = body["results"]
    assert [r["model"] for r in results] == models
    for i, (reference, result) in enumerate(zip(models, results, strict=True)):
        alone = predicted(client, features=FLOWER, model=reference)
        # approx: the three iris items reach one batcher at once, and a model call over three
        # rows may round its last bit unlike one over a single row
        assert result["prediction"] == alone["prediction"]
        assert result["scores"] == alone["scores"]
        assert result["confidence"] == pytest.approx(alone["confidence"], abs=1e-12)
        assert result["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-12)
        assert result["version"] == alone["version"]
        assert result["processing_time_ms"] > 0
        assert result["id"] == f"{body['request_id']}-{i}"  # a prediction id per model
    assert results[0]["probabilities"] is None  # svc: predict only, as /api/predict says
    assert results[1]["probabilities"] is not None


def test_a_text_and_features_by_name_are_compared_too(client: TestClient) -> None:
    text = compare(client, text=TEXT, models=["sentiment"])["results"][0]
    alone = predicted(client, text=TEXT, model="sentiment")
    assert text["prediction"] == alone["prediction"]
    assert text["confidence"] == pytest.approx(alone["confidence"], abs=1e-12)

    by_name = compare(client, features=FLOWER_BY_NAME, models=["iris", "svc"])["results"]
    assert [r["prediction"] for r in by_name] == [
        predicted(client, features=FLOWER, model=m)["prediction"] for m in ("iris", "svc")
    ]


def test_the_models_predict_at_the_same_time(
    register: Callable[..., ModelMetadata],
    gated_estimator: Callable[[str], Any],
    serve: Callable[..., TestClient],
) -> None:
    gates = {name: broken_models.Gate() for name in ("compare-a", "compare-b")}
    broken_models.GATES.update(gates)
    try:
        for name in gates:
            register(gated_estimator(name), name, feature_names=IRIS_FEATURES)
        client = serve()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, PATH, json={"features": FLOWER, "models": [*gates]})
            # Each model waits in its predict call until released: both are in one at once.
            assert all(g.entered.wait(timeout=10) for g in gates.values())
            for g in gates.values():
                g.release.set()
            response = pending.result(timeout=10)
    finally:
        for name, g in gates.items():
            g.release.set()
            broken_models.GATES.pop(name, None)
    assert response.status_code == 200, response.text
    assert [r["model"] for r in response.json()["results"]] == [*gates]
    assert all("prediction" in r for r in response.json()["results"])


def test_each_answer_takes_feedback_by_its_id(client: TestClient) -> None:
    body = compare(client, features=FLOWER, models=["iris", "svc"])

    for result in body["results"]:
        response = client.post(
            "/api/feedback", json={"request_id": result["id"], "label": "versicolor"}
        )
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- isolated errors
def test_an_unknown_model_and_an_unfit_model_fail_alone(client: TestClient) -> None:
    models = ["nope", "sentiment", "iris", "sentiment@canary", "iris:99"]

    body = compare(client, text=TEXT, models=models)

    rid = body["request_id"]
    nope, sentiment, iris, canary, missing_version = body["results"]
    assert "nope" in item_error(nope, "nope", "model_not_found", rid)["message"]
    assert sentiment["prediction"] == predicted(client, text=TEXT, model="sentiment")["prediction"]
    assert sentiment["id"] == f"{rid}-1"  # the index in `models`, errors counted
    assert "tabular" in item_error(iris, "iris", "invalid_input", rid)["message"]
    assert "canary" in item_error(canary, "sentiment@canary", "model_not_found", rid)["message"]
    item_error(missing_version, "iris:99", "model_not_found", rid)


def test_a_malformed_reference_is_that_models_error(client: TestClient) -> None:
    body = compare(client, features=FLOWER, models=["iris@", "iris"])

    item_error(body["results"][0], "iris@", "invalid_reference", body["request_id"])
    assert "prediction" in body["results"][1]


def test_a_failing_model_is_a_500_item_without_internals(
    all_models: dict[str, ModelMetadata],
    register: Callable[..., ModelMetadata],
    broken_estimator: Any,
    serve: Callable[..., TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    client = serve(raise_server_exceptions=False)

    with caplog.at_level(logging.WARNING, logger="mlserve"):
        response = client.post(
            PATH,
            json={"features": FLOWER, "models": ["broken", "iris"]},
            headers={"x-request-id": "compare-500"},
        )

    assert response.status_code == 200, response.text
    assert SECRET_DETAIL not in response.text
    broken, iris = response.json()["results"]
    error = item_error(broken, "broken", "prediction_failed", "compare-500")
    for leak in ("hunter2", "/srv", "RuntimeError", "Traceback", ".py"):
        assert leak not in error["message"], error
    assert iris["prediction"] == predicted(client, features=FLOWER, model="iris")["prediction"]
    assert "compare-500" in caplog.text  # the failure is logged with the request id


def test_an_unexpected_failure_is_an_opaque_500_item_logged_with_its_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = PredictionService.predict

    async def fail_for_svc(self: PredictionService, runtime: Any, **kwargs: Any) -> Any:
        if runtime.model.name == "svc":
            raise KeyError(SECRET_DETAIL)  # a bug, not an MlserveError
        return await original(self, runtime, **kwargs)

    monkeypatch.setattr(PredictionService, "predict", fail_for_svc)
    with caplog.at_level(logging.ERROR, logger="mlserve"):
        body = compare(client, features=FLOWER, models=["svc", "iris"])

    error = item_error(body["results"][0], "svc", "internal_error", body["request_id"])
    assert error["message"] == "internal server error"
    assert "prediction" in body["results"][1]
    assert SECRET_DETAIL in caplog.text and "Traceback" in caplog.text  # in the log only


# ---------------------------------------------------------------------------- request errors
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": TEXT}, "models"),
        ({"text": TEXT, "models": []}, "at least 1"),
        ({"text": TEXT, "models": "iris"}, "models"),
        ({"text": TEXT, "models": [""]}, "models.0"),
        ({"text": TEXT, "models": ["iris", "iris"]}, "'iris' is asked twice"),
        (
            {"text": TEXT, "models": [f"m{i}" for i in range(MAX_COMPARE_MODELS + 1)]},
            f"at most {MAX_COMPARE_MODELS}",
        ),
        ({"models": ["iris"]}, "exactly one of 'text' or 'features'"),
        ({"text": TEXT, "features": FLOWER, "models": ["iris"]}, "exactly one"),
        ({"text": "   ", "models": ["sentiment"]}, "empty or whitespace only"),
        ({"text": TEXT, "models": ["sentiment"], "model": "iris"}, "model: unknown field"),
    ],
)
def test_an_invalid_request_is_a_422(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    error = error_of(client.post(PATH, json=body), 422, "invalid_input")
    assert fragment in error["message"], error


def test_a_text_over_the_limit_is_refused_once_for_every_model(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(server={"max_text_length": 10})
    body = {"text": "x" * 11, "models": ["sentiment", "iris"]}

    error = error_of(client.post(PATH, json=body), 422, "invalid_input")
    assert "the limit is 10" in error["message"]


# ---------------------------------------------------------------------------- auth and docs
def test_compare_needs_the_predict_role(
    iris_meta: ModelMetadata,
    make_settings: Callable[..., Settings],
    serve: Callable[..., TestClient],
) -> None:
    assert AccessPolicy().required("POST", PATH) == "predict"
    key = KeyStore(make_settings().keys_file).create(role="predict", name="ci").key
    client = serve()
    body = {"features": FLOWER, "models": ["iris"]}

    error_of(client.post(PATH, json=body), 401, "unauthorized")
    response = client.post(PATH, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


def test_compare_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][PATH]["post"]

    assert {"200", "413", "422"} <= set(operation["responses"])
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CompareRequest"
    )
