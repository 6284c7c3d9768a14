"""Small credential claims of SECURITY.md: a key is never read from the query string, the key
file is private to its owner, and no HTTP route registers or uploads a model."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings

from mlserve.keys import KeyStore
from mlserve.server.app import create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = populated_settings(
        tmp_path_factory.mktemp("credentials"), traffic={"watch_interval_s": 0},
        jobs={"concurrency": 0},
    )  # fmt: skip
    keys = KeyStore(settings.keys_file)
    created = keys.create(role="admin", name="ops").key
    with TestClient(create_app(settings)) as client:
        yield {"client": client, "key": created, "keys_file": settings.keys_file}


@pytest.mark.parametrize("param", ["api_key", "apikey", "key", "token", "access_token"])
def test_a_valid_key_in_the_query_string_is_not_read(app: dict[str, Any], param: str) -> None:
    client: TestClient = app["client"]
    assert client.get("/api/models", headers={"X-API-Key": app["key"]}).status_code == 200
    assert client.get("/api/models", params={param: app["key"]}).status_code == 401


def test_the_key_file_is_readable_by_its_owner_only(app: dict[str, Any]) -> None:
    mode = stat.S_IMODE(Path(app["keys_file"]).stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_no_route_takes_a_model_file_or_registers_a_version(app: dict[str, Any]) -> None:
    """Every write operation of the API, listed: a new one must be reviewed against the claim
    that the API only switches between versions registered on disk."""
    schema = app["client"].get("/openapi.json").json()
    writes = sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"post", "put", "patch", "delete"}
    )
    registering = [
        (m, p) for m, p in writes if "import" in p or "register" in p or p.endswith("/versions")
    ]
    assert registering == [], registering
    uploads = [
        (m, p) for m, p in writes
        if "multipart/form-data" in schema["paths"][p][m.lower()].get("requestBody", {}).get(
            "content", {})
    ]  # fmt: skip
    assert uploads == [("POST", "/api/predict/async")]  # inputs to score, not a model
