"""HTTP details a client or a browser relies on: a 405's Allow header names every method of the
path, CORS lets a browser send every method the API uses, state-changing routes read JSON only,
and the OpenAPI schema says what the server enforces (schemathesis checks the whole schema in
tests/fuzz/test_openapi_conformance.py; these pin the cases the issue named)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlserve.schemas import ModelMetadata
from mlserve.schemas.traffic import MAX_SPLIT_VERSIONS
from mlserve.serving import traffic

from .conftest import error_of

ORIGIN = "https://app.example.com"
FLOWERS = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def client(
    text_meta: ModelMetadata, iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> TestClient:
    """sentiment and iris, with a browser origin allowed (CORS) and the jobs runner off."""
    return serve(
        raise_server_exceptions=False,
        server={"cors_origins": [ORIGIN]},
        jobs={"concurrency": 0},
        traffic={"watch_interval_s": 0},
    )


def _methods(response: Any) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


# ---------------------------------------------------------------------------- 405 and Allow
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/api/models/iris/traffic", {"GET", "PUT", "DELETE"}),
        ("PATCH", "/api/models/iris/traffic", {"GET", "PUT", "DELETE"}),
        ("GET", "/api/models/iris/aliases/production", {"PUT", "DELETE"}),
        ("PUT", "/api/jobs/0123456789abcdef", {"GET", "DELETE"}),
        ("GET", "/api/predict", {"POST"}),
    ],
)
def test_a_405_allows_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)

    error = error_of(response, 405, "method_not_allowed")
    assert _methods(response) == allowed
    assert method in error["message"] and response.headers["allow"] in error["message"]


def test_a_405_on_v2_allows_every_method_in_the_v2_shape(client: TestClient) -> None:
    response = client.get("/v2/models/iris/infer")

    assert response.status_code == 405
    assert _methods(response) == {"POST"}
    assert set(response.json()) == {"error"}


def test_every_method_in_the_schema_is_answered_405_elsewhere_with_all_of_them(
    client: TestClient,
) -> None:
    """For every documented path, a method it does not take gets 405 naming exactly the
    methods the schema documents for it."""
    paths = client.get("/openapi.json").json()["paths"]
    values = {"name": "iris", "version": "1", "alias": "production", "job_id": "0" * 32}
    for template, item in paths.items():
        documented = {m.upper() for m in item}
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        wrong = next(m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in documented)

        response = client.request(wrong, path)

        assert response.status_code == 405, (template, wrong, response.text)
        assert _methods(response) == documented, template


# ---------------------------------------------------------------------------- CORS
def test_a_browser_may_send_every_method_the_api_uses(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    used = {method.upper() for item in paths.values() for method in item}
    assert "PUT" in used  # the admin alias and traffic routes

    for method in sorted(used):
        answer = client.options(
            "/api/models/iris/aliases/production",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )

        assert answer.status_code == 200, (method, answer.text)
        assert method in answer.headers["access-control-allow-methods"]


def test_a_browser_can_move_an_alias(client: TestClient) -> None:
    response = client.put(
        "/api/models/iris/aliases/staging", json={"version": 1}, headers={"Origin": ORIGIN}
    )

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN


# ---------------------------------------------------------------------------- JSON only
NOT_JSON = ["text/plain", "text/plain; charset=UTF-8", "application/x-www-form-urlencoded"]
STATE_CHANGING = [
    ("POST", "/api/models/iris/reload", None),  # takes no body at all
    ("PUT", "/api/models/iris/aliases/staging", {"version": 1}),
    ("DELETE", "/api/models/iris/aliases/production", None),
    ("PUT", "/api/models/iris/traffic", {"split": {"1": 100}}),
    ("DELETE", "/api/models/iris/traffic", None),
    ("POST", "/api/feedback", {"request_id": "x", "label": "setosa"}),
    ("POST", "/api/predict", {"features": FLOWERS[0], "model": "iris"}),
    ("POST", "/api/predict/batch", {"records": FLOWERS, "model": "iris"}),
]


@pytest.mark.parametrize("content_type", NOT_JSON)
@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGING, ids=lambda x: str(x)[:40])
def test_state_changing_routes_refuse_what_is_not_json(
    client: TestClient, method: str, path: str, body: Any, content_type: str
) -> None:
    # A web page can send a form post or text/plain anywhere without asking first (a CORS
    # "simple" request): with any body, or none (an empty form), it changes nothing.
    aliases_before = client.get("/api/models/iris").json()["all_aliases"]
    for content in (b'{"version": 1}', b""):
        response = client.request(
            method, path, content=content, headers={"content-type": content_type}
        )

        error = error_of(response, 422, "invalid_input")
        assert "Content-Type" in error["message"]
    assert client.get("/api/models/iris").json()["all_aliases"] == aliases_before


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGING, ids=lambda x: str(x)[:40])
def test_state_changing_routes_take_json(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body)

    assert "Content-Type" not in response.text, response.text


def test_a_route_without_a_body_takes_a_request_without_a_content_type(
    client: TestClient,
) -> None:
    assert client.post("/api/models/iris/reload").status_code == 200  # curl -X POST
    assert client.delete("/api/models/iris/traffic").status_code == 200


def test_reads_may_carry_any_content_type(client: TestClient) -> None:
    response = client.get("/api/models/iris", headers={"content-type": "text/plain"})

    assert response.status_code == 200


# ---------------------------------------------------------------------------- the schema
def test_the_schema_says_what_the_server_refuses(client: TestClient) -> None:
    """The cases the issue named: each is refused by the server and forbidden by the schema."""
    schema = client.get("/openapi.json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]

    # V2 version 0 (a version number starts at 1; aliases are not only digits).
    version = next(
        p["schema"]
        for p in paths["/v2/models/{name}/versions/{version}"]["get"]["parameters"]
        if p["name"] == "version"
    )
    assert not re.fullmatch(version["pattern"], "0")
    assert re.fullmatch(version["pattern"], "3") and re.fullmatch(version["pattern"], "prod-2")
    assert client.get("/v2/models/iris/versions/0").status_code == 400

    # {} bodies where one input is needed.
    submit = paths["/api/predict/async"]["post"]["requestBody"]["content"]["application/json"]
    assert "anyOf" in components["PredictRequest"]  # text or features (or both)
    assert "oneOf" in components["BatchPredictRequest"]
    assert "oneOf" in submit["schema"]
    assert error_of(client.post("/api/predict", json={}), 422)
    assert error_of(client.post("/api/predict/batch", json={}), 422)

    # Shapes above int64 (and above what a double holds exactly).
    shape = components["RequestInput"]["properties"]["shape"]["items"]
    assert shape["maximum"] == 2**53 - 1 and shape["minimum"] == 0
    for dimension in (2**63, 2**53):
        tensor = {"name": "input", "shape": [dimension, 4], "datatype": "FP64", "data": []}
        response = client.post("/v2/models/iris/infer", json={"inputs": [tensor]})
        assert response.status_code == 400 and "shape" in response.json()["error"]

    # {"ready": 0}: a boolean is true or false.
    assert components["RepositoryIndexRequest"]["properties"]["ready"]["anyOf"][0] == {
        "type": "boolean"
    }
    assert client.post("/v2/repository/index", json={"ready": 0}).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"version": "1"},  # a string is not a number
        {"version": 1.5},
        {"version": True},
        {"version": 0},
    ],
)
def test_integers_are_read_as_the_schema_says(client: TestClient, body: dict[str, Any]) -> None:
    error_of(client.put("/api/models/iris/aliases/staging", json=body), 422, "invalid_input")


def test_an_integer_may_be_written_as_a_whole_float(client: TestClient) -> None:
    # JSON Schema's integer: 1.0 is 1.
    response = client.put("/api/models/iris/aliases/staging", json={"version": 1.0})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "split",
    [
        {"1": 0},  # all weights 0
        {"0": 100},
        {"x": 100},
        {"1": -1},
        {"1": 2e9},  # weights are bounded, so that no sum of them overflows
        {str(v): 1 for v in range(1, MAX_SPLIT_VERSIONS + 2)},
        {},
    ],
)
def test_splits_the_schema_forbids_are_refused(client: TestClient, split: dict[str, Any]) -> None:
    error_of(client.put("/api/models/iris/traffic", json={"split": split}), 422, "invalid_input")


def test_the_split_limit_is_the_traffic_services(client: TestClient) -> None:
    assert MAX_SPLIT_VERSIONS == traffic.MAX_SPLIT_VERSIONS


def test_readiness_documents_400_on_v2_and_503_on_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for path in ("/v2/health/ready", "/v2/models/{name}/ready"):
        responses = paths[path]["get"]["responses"]
        assert "400" in responses and "503" not in responses, path
    assert "503" in paths["/api/ready"]["get"]["responses"]
