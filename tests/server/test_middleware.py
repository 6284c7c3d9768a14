"""Around every route: request ids, timing, gzip, CORS; and the OpenAPI docs and index."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.schemas import ModelMetadata
from mlserve.server.openapi import api_routes

from .broken_models import SlowClassifier
from .conftest import error_of

PREDICT = {"text": "lovely staff", "model": "sentiment"}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/predict", PREDICT),
        ("POST", "/api/predict", {"text": "x", "model": "nosuch"}),
        ("POST", "/api/predict/batch", {"texts": ["a"], "model": "sentiment"}),
        ("GET", "/api/health", None),
        ("GET", "/nowhere", None),
    ],
)
def test_request_id_sent_is_echoed_on_the_response_and_in_the_body(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    rid = "client-req_42.a:b"

    response = client.request(method, path, json=body, headers={"X-Request-ID": rid})

    assert response.headers["x-request-id"] == rid
    if path.startswith("/api/predict"):
        payload = response.json()
        assert payload.get("request_id", payload.get("error", {}).get("request_id")) == rid


def test_a_request_id_is_generated_when_none_is_sent(client: TestClient) -> None:
    first = client.post("/api/predict", json=PREDICT)
    second = client.post("/api/predict", json=PREDICT)

    assert GENERATED_ID.match(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert first.json()["request_id"] == first.headers["x-request-id"]


@pytest.mark.parametrize(
    "unsafe",
    [
        "has spaces in it",
        "x" * 129,
        "quote\"and'back\\slash",
        "",
        "<script>",
    ],
)
def test_an_unsafe_request_id_is_replaced_by_a_generated_one(
    client: TestClient, unsafe: str
) -> None:
    response = client.post("/api/predict", json=PREDICT, headers={"X-Request-ID": unsafe})

    assert GENERATED_ID.match(response.headers["x-request-id"])
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_request_id_with_a_trailing_newline_is_replaced() -> None:
    from mlserve.server.ids import RequestIds
    from mlserve.server.middleware.context import request_id_of_headers

    ids = RequestIds()
    assert GENERATED_ID.match(
        request_id_of_headers({"headers": [(b"x-request-id", b"abc\n")]}, ids)
    )
    assert request_id_of_headers({"headers": [(b"x-request-id", b"abc")]}, ids) == "abc"
    assert request_id_of_headers({"headers": [(b"x-request-id", b"x" * 128)]}, ids) == "x" * 128


SLOW_S = 0.1  # how long SlowClassifier takes per prediction in the process-time test


@pytest.mark.parametrize("path", ["/api/predict", "/api/live", "/nowhere"])
def test_process_time_header_is_a_duration_in_ms(
    register: Callable[..., ModelMetadata], iris: tuple[Any, Any], serve: Any, path: str
) -> None:
    x, y = iris
    register(SlowClassifier(delay_s=SLOW_S).fit(x, y), "slow", feature_names=IRIS_FEATURES)
    client = serve(raise_server_exceptions=False)

    started = time.perf_counter()
    if "predict" in path:
        response = client.post(path, json={"features": [5.1, 3.5, 1.4, 0.2], "model": "slow"})
    else:
        response = client.get(path)
    round_trip_ms = (time.perf_counter() - started) * 1000.0

    header = response.headers["x-process-time"]
    assert re.fullmatch(r"\d+\.\d{3}", header), header  # milliseconds, to the microsecond
    assert response.headers["server-timing"] == f"app;dur={header}"  # the same, for browsers
    # Measured inside the server: more than nothing, never more than the client waited.
    assert 0 < float(header) <= round_trip_ms
    if "predict" in path:
        assert response.status_code == 200, response.text
        assert float(header) >= SLOW_S * 1000.0  # it covers the model's own time


def _big_batch() -> dict[str, Any]:
    return {"texts": ["lovely staff"] * 60, "model": "sentiment"}


@pytest.mark.parametrize("path", ["/api/predict/batch", "/openapi.json"])
def test_large_responses_are_gzipped_when_the_client_accepts_it(
    client: TestClient, path: str
) -> None:
    def fetch(encoding: str) -> Any:
        headers = {"Accept-Encoding": encoding}
        if path.endswith("batch"):
            return client.post(path, json=_big_batch(), headers=headers)
        return client.get(path, headers=headers)

    zipped = fetch("gzip")
    plain = fetch("identity")

    assert zipped.status_code == 200 and plain.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 1000
    assert int(zipped.headers["content-length"]) < len(plain.content)


def test_small_responses_are_not_gzipped(client: TestClient) -> None:
    response = client.get("/api/live", headers={"Accept-Encoding": "gzip"})

    assert "content-encoding" not in response.headers


def test_a_single_prediction_is_gzipped_over_the_threshold(
    text_meta: ModelMetadata, serve: Any
) -> None:
    client = serve(server={"gzip_min_bytes": 10})

    response = client.post(
        "/api/predict", json={"text": "lovely"}, headers={"Accept-Encoding": "gzip"}
    )

    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["model"] == "sentiment"  # httpx decoded it


def test_gzip_body_decodes_to_the_same_json(client: TestClient) -> None:
    plain = client.post("/api/predict/batch", json=_big_batch())
    with client.stream(
        "POST", "/api/predict/batch", json=_big_batch(), headers={"Accept-Encoding": "gzip"}
    ) as zipped:
        raw = b"".join(zipped.iter_raw())  # the bytes on the wire, not decoded by httpx

    assert zipped.headers["content-encoding"] == "gzip"
    assert _answers(json.loads(gzip.decompress(raw))) == _answers(plain.json())


def _answers(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The predictions without their per-row ids, which differ from request to request."""
    return [{k: v for k, v in p.items() if k != "id"} for p in body["predictions"]]


ALLOWED = "https://app.example.com"


@pytest.fixture
def cors_client(all_models: dict[str, ModelMetadata], serve: Any) -> TestClient:
    return serve(server={"cors_origins": [ALLOWED]})


def test_cors_allows_a_configured_origin(cors_client: TestClient) -> None:
    response = cors_client.post("/api/predict", json=PREDICT, headers={"Origin": ALLOWED})

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed


def test_cors_preflight_for_a_configured_origin(cors_client: TestClient) -> None:
    response = cors_client.options(
        "/api/predict",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-request-id",
        },
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_cors_gives_an_unknown_origin_no_allow_header(cors_client: TestClient) -> None:
    response = cors_client.post(
        "/api/predict", json=PREDICT, headers={"Origin": "https://evil.example.com"}
    )
    preflight = cors_client.options(
        "/api/predict",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )

    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_no_cors_headers_without_configured_origins(client: TestClient) -> None:
    response = client.post("/api/predict", json=PREDICT, headers={"Origin": ALLOWED})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_access_log_has_one_record_per_request_with_its_id_and_model(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mlserve.access")

    client.post("/api/predict", json=PREDICT, headers={"X-Request-ID": "log-me"})

    records = [r for r in caplog.records if r.name == "mlserve.access"]
    assert len(records) == 1
    record: Any = records[0]
    assert record.request_id == "log-me"
    assert record.status == 200
    assert record.path == "/api/predict"
    assert record.model == "sentiment"
    assert record.version == 1
    assert record.duration_ms >= 0


def test_access_log_is_one_json_object_per_request_in_json_format(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from mlserve.logs import JsonFormatter

    caplog.set_level("INFO", logger="mlserve.access")
    client.post("/api/predict", json={"text": "x", "model": "nosuch"})

    line = JsonFormatter().format(next(r for r in caplog.records if r.name == "mlserve.access"))

    data = json.loads(line)
    for key in ("time", "method", "path", "status", "duration_ms", "request_id"):
        assert key in data, key
    assert data["status"] == 404


# ---------------------------------------------------------------------------- OpenAPI and index
def test_openapi_lists_every_api_route_with_request_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    paths = schema["paths"]
    for path, method in [
        ("/api/predict", "post"),
        ("/api/predict/batch", "post"),
        ("/api/models", "get"),
        ("/api/models/{name}", "get"),
        ("/api/models/{name}/versions/{version}", "get"),
        ("/api/models/{name}/reload", "post"),
        ("/api/live", "get"),
        ("/api/ready", "get"),
        ("/api/health", "get"),
        ("/api/health/detailed", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
        assert paths[path][method].get("summary"), path
        assert paths[path][method].get("description"), path
    api_paths = {
        route.path
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        if route.path.startswith("/api")
    }
    assert len(api_paths) >= 15  # the walk reaches the included routers' routes
    assert api_paths <= set(paths)  # nothing under /api is left out of the schema
    schemas = schema["components"]["schemas"]
    assert schemas["PredictRequest"]["examples"]
    assert schemas["BatchPredictRequest"]["examples"]
    assert schemas["ErrorResponse"]
    responses = paths["/api/predict"]["post"]["responses"]
    assert {"200", "404", "413", "422", "500", "503"} <= set(responses)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_answer(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_index_lists_links_that_answer(client: TestClient) -> None:
    body = client.get("/").json()

    assert body["name"] == "mlserve"
    for name, link in body["links"].items():
        if name == "predict":
            continue
        assert client.get(link).status_code == 200, (name, link)


def test_unknown_route_error_names_the_path(client: TestClient) -> None:
    assert "/api/nothing" in error_of(client.get("/api/nothing"), 404)["message"]
