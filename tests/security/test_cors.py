"""CORS denies by default: no Access-Control-Allow-Origin for an origin that is not configured
(look-alikes included), on every kind of route and answer, preflight or not; a configured
origin is allowed, never with credentials. (The basics: tests/server/test_middleware.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings

from mlserve.server.app import create_app

ALLOWED = "https://app.example.com"
LOOK_ALIKES = [
    "https://evil.example.com",
    "https://app.example.com.evil.net",
    "https://evilapp.example.com",
    "http://app.example.com",  # another scheme
    "https://app.example.com:8443",  # another port
    "https://APP.EXAMPLE.COM.evil.net",
    "null",  # sandboxed iframes, file:// pages
]
FLOWER = [5.1, 3.5, 1.4, 0.2]
REQUESTS = [
    ("POST", "/api/predict", {"features": FLOWER, "model": "iris"}),  # the fast path
    ("POST", "/api/predict", {"features": [1], "model": "iris"}),  # 422
    ("POST", "/api/predict/batch", {"records": [FLOWER], "model": "iris"}),
    ("POST", "/v2/models/iris/infer",
     {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": FLOWER}]}),
    ("POST", "/api/predict/async", {"features": FLOWER, "model": "iris"}),
    ("GET", "/api/models", None),
    ("GET", "/api/health", None),
    ("GET", "/no/such/route", None),  # 404
]  # fmt: skip


def _client(tmp_path_factory: pytest.TempPathFactory, origins: list[str]) -> Iterator[TestClient]:
    settings = populated_settings(
        tmp_path_factory.mktemp("cors"),
        server={"cors_origins": origins},
        jobs={"concurrency": 0},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory, [ALLOWED])


@pytest.fixture(scope="module")
def no_cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory, [])


def send(client: TestClient, method: str, path: str, body: Any, origin: str) -> Any:
    return client.request(method, path, json=body, headers={"Origin": origin})


def preflight(client: TestClient, method: str, path: str, origin: str) -> Any:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    return client.options(path, headers=headers)


@pytest.mark.parametrize("origin", LOOK_ALIKES)
@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=lambda x: str(x)[:30])
def test_unknown_origins_get_no_allow_origin(
    cors: TestClient, method: str, path: str, body: Any, origin: str
) -> None:
    response = send(cors, method, path, body, origin)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    refused = preflight(cors, method, path, origin)
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=lambda x: str(x)[:30])
def test_the_configured_origin_is_allowed_without_credentials(
    cors: TestClient, method: str, path: str, body: Any
) -> None:
    response = send(cors, method, path, body, ALLOWED)
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in response.headers
    allowed = preflight(cors, method, path, ALLOWED)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in allowed.headers


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=lambda x: str(x)[:30])
def test_without_configured_origins_nobody_is_allowed(
    no_cors: TestClient, method: str, path: str, body: Any
) -> None:
    for origin in (ALLOWED, "null"):
        response = send(no_cors, method, path, body, origin)
        assert not any(h.startswith("access-control-") for h in response.headers)
        answer = preflight(no_cors, method, path, origin)
        assert not any(h.startswith("access-control-") for h in answer.headers)
