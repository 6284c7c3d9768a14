"""POST /api/predict: one text or one row of features, answered with what the model computes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.schemas import ModelMetadata

TEXT = "The staff were wonderful and the food was great"
FLOWER = [6.1, 2.8, 4.7, 1.2]


def _assert_probabilities_match(body: dict[str, Any], estimator: Any, x: Any) -> None:
    proba = estimator.predict_proba(x)[0]
    expected = {str(c): p for c, p in zip(estimator.classes_, proba, strict=True)}
    assert body["probabilities"].keys() == expected.keys()
    for key, p in expected.items():
        assert body["probabilities"][key] == pytest.approx(p, abs=1e-12)
    assert math.fsum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
    assert body["confidence"] == pytest.approx(max(proba), abs=1e-12)
    assert body["confidence"] == max(body["probabilities"].values())
    assert body["prediction"] == str(estimator.predict(x)[0])


def test_text_prediction_reports_the_estimators_own_probabilities(
    client: TestClient, text_estimator: Any, text_meta: ModelMetadata
) -> None:
    response = client.post("/api/predict", json={"text": TEXT, "model": "sentiment"})

    assert response.status_code == 200, response.text
    body = response.json()
    _assert_probabilities_match(body, text_estimator, [TEXT])
    assert body["model"] == "sentiment"
    assert body["version"] == text_meta.version
    assert body["processing_time_ms"] > 0
    assert body["request_id"] == response.headers["x-request-id"]


def test_tabular_prediction_accepts_features_by_name(
    client: TestClient, iris_estimator: Any
) -> None:
    features = dict(zip(IRIS_FEATURES, FLOWER, strict=True))

    response = client.post("/api/predict", json={"features": features, "model": "iris"})

    assert response.status_code == 200, response.text
    _assert_probabilities_match(response.json(), iris_estimator, np.array([FLOWER]))


def test_tabular_features_by_name_follow_the_models_order_not_the_requests(
    client: TestClient, iris_estimator: Any
) -> None:
    shuffled = dict(reversed(list(zip(IRIS_FEATURES, FLOWER, strict=True))))

    response = client.post("/api/predict", json={"features": shuffled, "model": "iris"})

    assert response.status_code == 200, response.text
    _assert_probabilities_match(response.json(), iris_estimator, np.array([FLOWER]))


def test_tabular_prediction_accepts_features_as_a_list(
    client: TestClient, iris_estimator: Any
) -> None:
    response = client.post("/api/predict", json={"features": FLOWER, "model": "iris"})

    assert response.status_code == 200, response.text
    _assert_probabilities_match(response.json(), iris_estimator, np.array([FLOWER]))


def test_regression_gives_a_value_and_null_confidence(
    client: TestClient, regression_estimator: Any
) -> None:
    response = client.post("/api/predict", json={"features": FLOWER[:3], "model": "petal"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] == pytest.approx(regression_estimator.predict([FLOWER[:3]])[0])
    assert body["confidence"] is None
    assert body["probabilities"] is None


def test_predict_only_classifier_gives_a_label_and_null_confidence(
    client: TestClient, svc_estimator: Any
) -> None:
    response = client.post("/api/predict", json={"features": FLOWER, "model": "svc"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] == str(svc_estimator.predict([FLOWER])[0])
    assert body["confidence"] is None
    assert body["probabilities"] is None


@pytest.fixture
def two_versions(
    all_models: dict[str, ModelMetadata], registry: Any, iris: tuple[Any, Any]
) -> tuple[ModelMetadata, ModelMetadata]:
    """iris:1 (production, LogisticRegression) and iris:2 (staging, a predict-only tree)."""
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    v2 = registry.register_estimator(
        DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y),
        name="iris",
        aliases=["staging"],
        feature_names=IRIS_FEATURES,
    )
    return all_models["iris"], v2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model": "iris"}, 1),
        ({"model": "iris:1"}, 1),
        ({"model": "iris:2"}, 2),
        ({"model": "iris@staging"}, 2),
        ({"model": "iris@production"}, 1),
        ({"model": "iris", "model_version": 2}, 2),
        ({"model": "iris", "model_version": "2"}, 2),
        ({"model": "iris", "model_version": "staging"}, 2),
    ],
)
def test_model_reference_selects_the_version(
    two_versions: tuple[ModelMetadata, ModelMetadata],
    serve: Any,
    fields: dict[str, Any],
    expected: int,
) -> None:
    client = serve()

    response = client.post("/api/predict", json={"features": FLOWER, **fields})

    assert response.status_code == 200, response.text
    assert response.json()["version"] == expected
    assert response.json()["model"] == "iris"


def test_the_only_served_model_is_the_default(
    text_meta: ModelMetadata, serve: Any, text_estimator: Any
) -> None:
    client = serve()

    response = client.post("/api/predict", json={"text": TEXT})

    assert response.status_code == 200, response.text
    assert response.json()["model"] == "sentiment"
    assert response.json()["prediction"] == text_estimator.predict([TEXT])[0]


def test_default_model_from_settings_answers_requests_without_model(
    all_models: dict[str, ModelMetadata], serve: Any
) -> None:
    client = serve(server={"default_model": "iris"})

    response = client.post("/api/predict", json={"features": FLOWER})

    assert response.status_code == 200, response.text
    assert response.json()["model"] == "iris"


def test_settings_models_limit_what_is_served(
    all_models: dict[str, ModelMetadata], serve: Any
) -> None:
    client = serve(server={"models": ["iris@production"]})

    assert client.post("/api/predict", json={"features": FLOWER}).status_code == 200
    response = client.post("/api/predict", json={"text": TEXT, "model": "sentiment"})
    assert response.status_code == 404, response.text


def test_default_model_from_settings_may_pin_a_version_or_alias(
    two_versions: tuple[ModelMetadata, ModelMetadata], serve: Any
) -> None:
    pinned = serve(server={"default_model": "iris:2"})
    aliased = serve(server={"default_model": "iris@staging"})

    assert pinned.post("/api/predict", json={"features": FLOWER}).json()["version"] == 2
    assert aliased.post("/api/predict", json={"features": FLOWER}).json()["version"] == 2


def test_model_version_alone_selects_a_version_of_the_default_model(
    two_versions: tuple[ModelMetadata, ModelMetadata], serve: Any
) -> None:
    client = serve(server={"default_model": "iris:2"})

    response = client.post("/api/predict", json={"features": FLOWER, "model_version": 1})

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1


def test_a_version_not_loaded_at_startup_is_loaded_on_first_use(
    two_versions: tuple[ModelMetadata, ModelMetadata], serve: Any, iris: tuple[Any, Any]
) -> None:
    client = serve()
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["iris"]["loaded_versions"] == [1]

    response = client.post("/api/predict", json={"features": FLOWER, "model": "iris:2"})

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    assert response.json()["confidence"] is not None  # a tree has predict_proba
