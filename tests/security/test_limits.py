"""Request size and count limits hold on every route that takes input: the body
(server.max_body_bytes, declared or chunked, compressed or not), batch items
(server.max_batch_items), text length (server.max_text_length), job inputs (jobs.max_items,
as JSON and as uploaded files) and multipart parts."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings

from mlserve.server.app import create_app

MAX_BODY = 8192
MAX_BATCH = 5
MAX_TEXT = 50
MAX_JOB = 7
FLOWER = [5.1, 3.5, 1.4, 0.2]
JSON = {"content-type": "application/json"}


def tensor(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]
    }


def text_tensor(texts: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = populated_settings(
        tmp_path_factory.mktemp("limits"),
        server={
            "max_body_bytes": MAX_BODY,
            "max_batch_items": MAX_BATCH,
            "max_text_length": MAX_TEXT,
        },
        jobs={"max_items": MAX_JOB, "concurrency": 0, "max_body_bytes": MAX_BODY},
        traffic={"watch_interval_s": 0},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def refused(response: Any, status: int, v2: bool = False) -> None:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    if v2:
        assert isinstance(error, str) and error
    else:
        assert error["code"] and error["message"]


BODY_ROUTES = [
    ("POST", "/api/predict"),
    ("POST", "/api/predict/batch"),
    ("POST", "/api/predict/async"),
    ("POST", "/v2/models/iris/infer"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/iris/load"),
    ("PUT", "/api/models/iris/traffic"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_max_body_bytes_is_413_on_every_route(
    client: TestClient, method: str, path: str, chunked: bool
) -> None:
    body = json.dumps({"text": "x" * MAX_BODY}).encode()
    content: Any = body
    if chunked:  # no Content-Length: counted while it streams in

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 1024):
                yield body[i : i + 1024]

        content = chunks()
    response = client.request(method, path, content=content, headers=JSON)
    refused(response, 413, v2=path.startswith("/v2/"))


def test_a_declared_body_over_the_limit_is_413_even_where_no_body_is_read(
    client: TestClient,
) -> None:
    body = b"x" * (MAX_BODY + 1)
    response = client.post("/api/models/iris/reload", content=body, headers=JSON)
    refused(response, 413)
    # Sent chunked, a body such a route never reads is never buffered either.
    assert client.post("/api/models/iris/reload", content=iter([body])).status_code == 200


def test_a_compressed_body_is_limited_by_its_inflated_size(client: TestClient) -> None:
    inflated = json.dumps(tensor([FLOWER] * 2000)).encode()
    packed = gzip.compress(inflated)
    assert len(packed) < MAX_BODY < len(inflated)
    headers = {**JSON, "content-encoding": "gzip"}
    response = client.post("/v2/models/iris/infer", content=packed, headers=headers)
    refused(response, 413, v2=True)


@pytest.mark.parametrize(
    ("path", "make", "over_status"),
    [
        ("/api/predict/batch", lambda n: {"records": [FLOWER] * n, "model": "iris"}, 422),
        ("/api/predict/batch", lambda n: {"texts": ["good"] * n, "model": "sentiment"}, 422),
        ("/v2/models/iris/infer", lambda n: tensor([FLOWER] * n), 400),
        ("/v2/models/sentiment/infer", lambda n: text_tensor(["good"] * n), 400),
    ],
)
def test_batches_hold_at_most_max_batch_items(
    client: TestClient, path: str, make: Any, over_status: int
) -> None:
    assert client.post(path, json=make(MAX_BATCH)).status_code == 200
    response = client.post(path, json=make(MAX_BATCH + 1))
    refused(response, over_status, v2=path.startswith("/v2/"))
    assert str(MAX_BATCH) in response.text


@pytest.mark.parametrize(
    ("path", "make", "ok", "over_status"),
    [
        ("/api/predict", lambda t: {"text": t, "model": "sentiment"}, 200, 422),
        ("/api/predict/batch", lambda t: {"texts": ["a", t], "model": "sentiment"}, 200, 422),
        ("/api/predict/async", lambda t: {"texts": [t], "model": "sentiment"}, 202, 422),
        ("/v2/models/sentiment/infer", lambda t: text_tensor([t]), 200, 400),
    ],
)
def test_texts_hold_at_most_max_text_length(
    client: TestClient, path: str, make: Any, ok: int, over_status: int
) -> None:
    # Characters, not bytes: "é" is two bytes in UTF-8 (and not blank, which is refused).
    assert client.post(path, json=make("é" * MAX_TEXT)).status_code == ok
    response = client.post(path, json=make("é" * (MAX_TEXT + 1)))
    refused(response, over_status, v2=path.startswith("/v2/"))


def _jsonl(n: int) -> bytes:
    return b"".join(json.dumps({"features": FLOWER}).encode() + b"\n" for _ in range(n))


def _csv(n: int) -> bytes:
    rows = ["sepal_length,sepal_width,petal_length,petal_width"]
    rows += [",".join(map(str, FLOWER))] * n
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.parametrize(
    "send",
    [
        lambda c, n: c.post("/api/predict/async", json={"records": [FLOWER] * n, "model": "iris"}),
        lambda c, n: c.post(
            "/api/predict/async",
            files={"file": ("rows.jsonl", _jsonl(n), "application/x-ndjson")},
            data={"model": "iris"},
        ),
        lambda c, n: c.post(
            "/api/predict/async",
            files={"file": ("rows.csv", _csv(n), "text/csv")},
            data={"model": "iris"},
        ),
    ],
    ids=["json", "jsonl-upload", "csv-upload"],
)
def test_jobs_hold_at_most_jobs_max_items(client: TestClient, send: Any) -> None:
    assert send(client, MAX_JOB).status_code == 202
    response = send(client, MAX_JOB + 1)
    refused(response, 413)
    assert "jobs.max_items" in response.text


def test_an_upload_with_several_files_or_too_many_fields_is_refused(client: TestClient) -> None:
    two_files = client.post(
        "/api/predict/async",
        files=[
            ("file", ("a.jsonl", _jsonl(1), "application/x-ndjson")),
            ("file", ("b.jsonl", _jsonl(1), "application/x-ndjson")),
        ],
        data={"model": "iris"},
    )
    refused(two_files, 400)
    fields = {f"field{i}": "x" for i in range(20)}
    many_fields = client.post(
        "/api/predict/async",
        files={"file": ("a.jsonl", _jsonl(1), "application/x-ndjson")},
        data={"model": "iris", **fields},
    )
    refused(many_fields, 400)
