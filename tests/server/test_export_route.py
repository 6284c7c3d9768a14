"""GET /api/models/{name}/versions/{version}/export: a version as a portable bundle (admin)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, IRIS_METRICS, tamper

from mlserve.keys import KeyStore
from mlserve.registry import Registry
from mlserve.registry.bundle import import_bundle
from mlserve.schemas import ModelMetadata

from .conftest import error_of

PROFILE = {"class_distribution": {"setosa": 0.3, "versicolor": 0.4, "virginica": 0.3}}


@pytest.fixture
def versions(register: Callable[..., ModelMetadata], iris_estimator: Any) -> list[ModelMetadata]:
    """iris:1 (production) with metrics and a drift profile, iris:2 (staging)."""
    first = register(
        iris_estimator,
        "iris",
        metrics=IRIS_METRICS,
        training=PROFILE,
        feature_names=IRIS_FEATURES,
    )
    second = register(iris_estimator, "iris", aliases=["staging"], feature_names=IRIS_FEATURES)
    return [first, second]


def _import(response: Any, tmp_path: Path) -> ModelMetadata:
    path = tmp_path / "pulled.tar.gz"
    path.write_bytes(response.content)
    return import_bundle(Registry(tmp_path / "other"), path, name="pulled")


@pytest.mark.parametrize(("version", "expected"), [("1", 1), ("production", 1), ("staging", 2)])
def test_export_returns_a_bundle_that_imports_into_another_registry(
    versions: list[ModelMetadata],
    serve: Callable[..., TestClient],
    tmp_path: Path,
    version: str,
    expected: int,
) -> None:
    client = serve()
    response = client.get(f"/api/models/iris/versions/{version}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="iris-{expected}.tar.gz"'
    )
    assert "content-encoding" not in response.headers  # already compressed: never gzipped twice
    original = versions[expected - 1]
    copy = _import(response, tmp_path)
    assert (copy.name, copy.version) == ("pulled", 1)
    assert copy.sha256 == original.sha256
    assert copy.metrics == original.metrics
    assert copy.training == original.training
    assert copy.input_schema == original.input_schema


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/models/nope/versions/1/export", 404, "model_not_found"),
        ("/api/models/iris/versions/9/export", 404, "model_not_found"),
        ("/api/models/iris/versions/canary/export", 404, "model_not_found"),
        ("/api/models/iris/versions/0/export", 422, None),
        ("/api/models/iris/versions/Not!An-Alias/export", 422, None),
    ],
    ids=["unknown-model", "unknown-version", "unknown-alias", "version-0", "invalid-alias"],
)
def test_unknown_or_invalid_versions_answer_in_the_error_shape(
    versions: list[ModelMetadata],
    serve: Callable[..., TestClient],
    path: str,
    status: int,
    code: str | None,
) -> None:
    error_of(serve().get(path), status, code)


def test_an_artifact_changed_on_disk_is_not_exported(
    versions: list[ModelMetadata], registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(raise_server_exceptions=False)
    tamper(registry, versions[1])
    error = error_of(client.get("/api/models/iris/versions/2/export"), 500, "integrity_error")
    assert "refusing to export" in error["message"]


def test_export_needs_the_admin_role_when_auth_is_on(
    versions: list[ModelMetadata],
    make_settings: Callable[..., Any],
    serve: Callable[..., TestClient],
    tmp_path: Path,
) -> None:
    keys = KeyStore(make_settings().keys_file)
    predict_key = keys.create(role="predict", name="ci").key
    admin_key = keys.create(role="admin", name="ops").key
    client = serve()
    path = "/api/models/iris/versions/1/export"
    error_of(client.get(path), 401, "unauthorized")
    predict = {"Authorization": f"Bearer {predict_key}"}
    assert client.get("/api/models/iris/versions/1", headers=predict).status_code == 200
    error_of(client.get(path, headers=predict), 403, "forbidden")
    response = client.get(path, headers={"X-API-Key": admin_key})
    assert response.status_code == 200, response.text
    assert _import(response, tmp_path).sha256 == versions[0].sha256


def test_export_is_documented_as_a_binary_admin_download(
    serve: Callable[..., TestClient], make_settings: Callable[..., Any]
) -> None:
    KeyStore(make_settings().keys_file).create(role="admin", name="ops")
    schema = serve().get("/openapi.json").json()
    operation = schema["paths"]["/api/models/{name}/versions/{version}/export"]["get"]
    ok = operation["responses"]["200"]
    assert list(ok["content"]) == ["application/gzip"]
    assert ok["content"]["application/gzip"]["schema"] == {"type": "string", "format": "binary"}
    for status in ("401", "403", "404", "422", "500"):  # errors in the one JSON shape
        assert list(operation["responses"][status]["content"]) == ["application/json"], status
    assert "admin" in operation["description"]
