"""PUT / DELETE /api/models/{name}/aliases/{alias}: promote, roll back and remove aliases through
the API (admin), changing the shared registry and this replica's served version at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.keys import KeyStore
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from .conftest import error_of

ROW = {"features": [5.9, 3.0, 5.1, 1.8], "model": "iris"}


@pytest.fixture
def two_versions(
    register: Callable[..., ModelMetadata], iris_meta: ModelMetadata, iris_estimator: Any
) -> tuple[ModelMetadata, ModelMetadata]:
    """iris:1 @production and iris:2 (no alias yet)."""
    second = register(iris_estimator, "iris", aliases=[], feature_names=IRIS_FEATURES)
    return iris_meta, second


def test_promoting_an_alias_serves_the_new_version_at_once(
    two_versions: tuple[ModelMetadata, ModelMetadata],
    serve: Callable[..., TestClient],
    registry: Registry,
) -> None:
    client = serve()
    assert client.post("/api/predict", json=ROW).json()["version"] == 1

    answer = client.put("/api/models/iris/aliases/production", json={"version": 2})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "name": "iris",
        "alias": "production",
        "version": 2,
        "previous_version": 1,
        "serving_version": 2,
        "reload_error": None,
    }
    assert registry.aliases("iris") == {"production": 2}  # what other replicas read
    assert client.post("/api/predict", json=ROW).json()["version"] == 2
    # Rolling back is the same call.
    back = client.put("/api/models/iris/aliases/production", json={"version": 1})
    assert back.json()["serving_version"] == 1
    assert client.post("/api/predict", json=ROW).json()["version"] == 1


def test_a_new_alias_and_its_removal(
    two_versions: tuple[ModelMetadata, ModelMetadata],
    serve: Callable[..., TestClient],
    registry: Registry,
) -> None:
    client = serve()
    created = client.put("/api/models/iris/aliases/staging", json={"version": 2})
    assert created.json()["previous_version"] is None
    assert created.json()["serving_version"] == 1  # production still names 1
    assert client.post("/api/predict", json={**ROW, "model": "iris@staging"}).json()["version"] == 2

    removed = client.delete("/api/models/iris/aliases/staging")

    assert removed.status_code == 200
    assert removed.json()["version"] is None and removed.json()["previous_version"] == 2
    assert registry.aliases("iris") == {"production": 1}
    error_of(client.delete("/api/models/iris/aliases/staging"), 404)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/models/iris/aliases/production", {"version": 9}, 404),
        ("/api/models/nothing/aliases/production", {"version": 1}, 404),
        ("/api/models/iris/aliases/Prod!", {"version": 1}, 422),
        ("/api/models/iris/aliases/123", {"version": 1}, 422),
        ("/api/models/iris/aliases/production", {"version": 0}, 422),
        ("/api/models/iris/aliases/production", {"version": "two"}, 422),
        ("/api/models/iris/aliases/production", {"version": 1, "extra": True}, 422),
    ],
)
def test_bad_alias_changes_get_the_error_shape_and_change_nothing(
    two_versions: tuple[ModelMetadata, ModelMetadata],
    serve: Callable[..., TestClient],
    registry: Registry,
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    client = serve()
    error_of(client.put(path, json=body), status)
    assert registry.aliases("iris") == {"production": 1}
    assert client.post("/api/predict", json=ROW).json()["version"] == 1


def test_alias_changes_need_the_admin_role(
    two_versions: tuple[ModelMetadata, ModelMetadata],
    serve: Callable[..., TestClient],
    make_settings: Callable[..., Any],
    registry: Registry,
) -> None:
    keys = KeyStore(make_settings().keys_file)
    predict_key = keys.create(name="app", role="predict").key
    admin_key = keys.create(name="ops", role="admin").key
    client = serve()

    refused = client.put(
        "/api/models/iris/aliases/production",
        json={"version": 2},
        headers={"Authorization": f"Bearer {predict_key}"},
    )
    error_of(refused, 403)
    assert registry.aliases("iris") == {"production": 1}
    allowed = client.put(
        "/api/models/iris/aliases/production",
        json={"version": 2},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert allowed.status_code == 200
    assert registry.aliases("iris") == {"production": 2}
