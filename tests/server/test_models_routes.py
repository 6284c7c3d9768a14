"""GET /api/models, /api/models/{name}, /api/models/{name}/versions/{v}: registry truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, IRIS_METRICS, TEXT_METRICS, tamper

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from .conftest import error_of


def test_models_list_every_served_model_with_versions_aliases_task_and_loaded(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    body = client.get("/api/models").json()

    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == set(all_models)
    assert by_name["sentiment"]["task"] == "text-classification"
    assert by_name["iris"]["task"] == "tabular-classification"
    assert by_name["petal"]["task"] == "tabular-regression"
    for name, meta in all_models.items():
        item = by_name[name]
        assert item["versions"] == [meta.version]
        assert item["aliases"] == {"production": meta.version}
        assert item["serving_version"] == meta.version
        assert item["loaded_versions"] == [meta.version]
        assert item["status"] == "loaded"
    assert body["default_model"] is None


def test_model_info_has_the_registered_metrics_classes_schema_and_sha256(
    client: TestClient, registry: Registry, iris_meta: ModelMetadata, iris_estimator: Any
) -> None:
    response = client.get("/api/models/iris")

    assert response.status_code == 200, response.text
    info = response.json()
    assert info["metrics"] == IRIS_METRICS
    assert info["classes"] == [str(c) for c in iris_estimator.classes_]
    assert info["input_schema"] == {
        "kind": "tabular",
        "feature_names": IRIS_FEATURES,
        "n_features": 4,
        # a float matrix (fitted on an array, the names given at registration): the
        # signature is a float per feature
        "columns": [
            {"name": n, "dtype": "float", "nullable": False, "categories": None}
            for n in IRIS_FEATURES
        ],
        "dataframe": False,
        "notes": [],
    }
    assert info["sha256"] == registry.metadata("iris", 1).sha256 == iris_meta.sha256
    assert info["version"] == 1
    assert info["versions"] == [1]
    assert info["aliases"] == ["production"]
    assert info["all_aliases"] == {"production": 1}
    assert info["has_predict_proba"] is True
    assert info["loaded"] is True
    assert datetime.fromisoformat(info["loaded_at"]).tzinfo is not None


def test_text_model_info_has_its_metrics_and_text_schema(
    client: TestClient, text_estimator: Any
) -> None:
    info = client.get("/api/models/sentiment").json()

    assert info["metrics"] == TEXT_METRICS
    assert info["input_schema"]["kind"] == "text"
    assert info["classes"] == list(text_estimator.classes_)
    assert info["task"] == "text-classification"


def test_regression_model_info_has_no_classes(client: TestClient) -> None:
    info = client.get("/api/models/petal").json()

    assert info["classes"] is None
    assert info["has_predict_proba"] is False
    assert info["input_schema"]["feature_names"] == IRIS_FEATURES[:3]


def test_version_info_says_whether_this_server_has_it_loaded(
    client: TestClient, registry: Registry, iris_estimator: Any
) -> None:
    v2 = registry.register_estimator(
        iris_estimator, name="iris", aliases=["staging"], feature_names=IRIS_FEATURES,
        metrics={"accuracy": 0.5},
    )  # fmt: skip

    before = client.get("/api/models/iris/versions/2").json()
    client.post("/api/predict", json={"features": [1, 2, 3, 4], "model": "iris:2"})
    after = client.get("/api/models/iris/versions/2").json()

    assert before["loaded"] is False and before["loaded_at"] is None
    assert before["metrics"] == {"accuracy": 0.5}
    assert before["sha256"] == v2.sha256
    assert before["aliases"] == ["staging"]
    assert after["loaded"] is True and after["loaded_at"] is not None
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}["iris"]
    assert listed["loaded_versions"] == [1, 2]
    assert listed["serving_version"] == 1


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    error_of(client.get("/api/models/nosuch"), 404, "model_not_found")
    error_of(client.get("/api/models/nosuch/versions/1"), 404, "model_not_found")
    error = error_of(client.get("/api/models/iris/versions/9"), 404, "model_not_found")
    assert "9" in error["message"]


def test_invalid_model_name_or_version_in_the_path_is_422(client: TestClient) -> None:
    error_of(client.get("/api/models/-bad"), 422, "invalid_input")
    error_of(client.get("/api/models/iris/versions/0"), 422, "invalid_input")
    error_of(client.get("/api/models/iris/versions/two"), 422, "invalid_input")


def test_a_model_that_failed_to_load_is_listed_as_failed(
    all_models: dict[str, ModelMetadata], registry: Registry, serve: Any
) -> None:
    tamper(registry, all_models["svc"])
    client = serve()

    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    info = client.get("/api/models/svc").json()

    assert listed["svc"]["status"] == "failed"
    assert listed["svc"]["serving_version"] is None
    assert listed["svc"]["loaded_versions"] == []
    assert "sha256" in listed["svc"]["error"]
    assert str(registry.root) not in listed["svc"]["error"]  # no server paths to clients
    assert listed["iris"]["status"] == "loaded"
    assert info["loaded"] is False
    assert info["sha256"] == all_models["svc"].sha256
