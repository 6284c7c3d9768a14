"""Every admin operation refuses the predict role (403) and anonymous callers (401), and lets an
admin through; every predict operation lets the predict role through. The operations come
from the app's own OpenAPI and the access policy, so a route added later is covered too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings

from mlserve.config import load_settings
from mlserve.keys import KeyStore
from mlserve.server.app import create_app
from mlserve.server.auth import AccessPolicy

# Admin-only paths the access policy guards that no route serves today (yet): still refused.
UNROUTED_ADMIN = [
    ("DELETE", "/api/models/iris"),
    ("POST", "/api/admin/anything"),
    ("GET", "/api/admin"),
    ("POST", "/v2/repository/models/iris/anything"),
]
PARAMS = {"name": "iris", "version": "1", "job_id": "0123456789abcdef", "alias": "production"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = populated_settings(
        tmp_path_factory.mktemp("roles"),
        traffic={"watch_interval_s": 0},
        jobs={"concurrency": 0},
        server={"model_control": "explicit"},  # so that V2 load and unload answer an admin
    )
    keys = KeyStore(settings.keys_file)
    predict = keys.create(role="predict", name="ci").key
    admin = keys.create(role="admin", name="ops").key
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield {"client": client, "predict": predict, "admin": admin}


def _operations(access: str) -> list[tuple[str, str]]:
    """(method, concrete path) of every documented operation needing `access`."""
    schema = _schema()
    policy = AccessPolicy()
    out = []
    for template, item in schema["paths"].items():
        for method in item:
            if policy.required(method.upper(), template) == access:
                path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)
                out.append((method.upper(), path))
    return out


_SCHEMA: dict[str, Any] = {}


def _schema() -> dict[str, Any]:
    """The OpenAPI of an app over an empty registry (collection time: no server needed)."""
    if not _SCHEMA:
        import tempfile

        with tempfile.TemporaryDirectory() as home:
            settings = load_settings(None, home=home, registry={"path": f"{home}/registry"})
            _SCHEMA.update(create_app(settings).openapi())
    return _SCHEMA


ADMIN = _operations("admin")
PREDICT = _operations("predict")


def send(client: TestClient, method: str, path: str, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"split": {"1": 100}} if path.endswith("/traffic") and method == "PUT" else None
    return client.request(method, path, headers=headers, json=body)


def test_the_role_table_has_admin_operations() -> None:
    names = {f"{m} {p}" for m, p in ADMIN}
    assert "POST /api/models/iris/reload" in names
    assert "DELETE /api/jobs/0123456789abcdef" in names
    assert "POST /v2/repository/index" in names
    assert len(ADMIN) >= 8 and len(PREDICT) >= 15


@pytest.mark.parametrize(("method", "path"), ADMIN + UNROUTED_ADMIN)
def test_admin_operations_refuse_the_predict_role_and_anonymous_callers(
    app: dict[str, Any], method: str, path: str
) -> None:
    client = app["client"]
    refused = send(client, method, path, app["predict"])
    assert refused.status_code == 403, refused.text
    assert "admin" in refused.text
    assert send(client, method, path, None).status_code == 401
    assert send(client, method, path, "mls_not-a-key").status_code == 401
    assert send(client, method, path, app["admin"]).status_code not in (401, 403)


@pytest.mark.parametrize(("method", "path"), PREDICT)
def test_predict_operations_admit_the_predict_role(
    app: dict[str, Any], method: str, path: str
) -> None:
    client = app["client"]
    assert send(client, method, path, None).status_code == 401
    assert send(client, method, path, app["predict"]).status_code not in (401, 403)
    assert send(client, method, path, app["admin"]).status_code not in (401, 403)
