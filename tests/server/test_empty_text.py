"""Empty or whitespace-only text is refused on every path that takes text, naming the row:
/api/predict (fast lane and route), the batch route, async jobs (JSON, .jsonl and .csv
uploads) and V2 BYTES inputs (400 there, as the protocol answers invalid input)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient

from .conftest import error_of

BLANKS = ["", " ", "   ", "\t\n", "\u00a0\u3000", "\u2028"]  # NBSP, ideographic space, LS
BLANK_IDS = ["empty", "space", "spaces", "tab-newline", "nbsp-ideographic", "line-separator"]
GOOD = "Wonderful, friendly and helpful service"


def _job_count(client: TestClient) -> int:
    """Jobs in the server's SQLite job store (none before the first submission)."""
    path = client.app.state.mlserve.settings.jobs_database  # type: ignore[attr-defined]
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


@pytest.mark.parametrize("blank", BLANKS, ids=BLANK_IDS)
def test_predict_refuses_blank_text(client: TestClient, blank: str) -> None:
    response = client.post("/api/predict", json={"text": blank, "model": "sentiment"})
    error = error_of(response, 422, "invalid_input")
    assert error["message"] == "'text' cannot be empty or whitespace only"


def test_text_with_words_around_whitespace_is_still_predicted(client: TestClient) -> None:
    response = client.post("/api/predict", json={"text": "  ok \n", "model": "sentiment"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("blank", BLANKS, ids=BLANK_IDS)
def test_batch_refuses_a_blank_text_naming_its_index(client: TestClient, blank: str) -> None:
    texts = [GOOD, GOOD, GOOD, blank, GOOD]
    response = client.post("/api/predict/batch", json={"texts": texts, "model": "sentiment"})
    error = error_of(response, 422, "invalid_input")
    assert error["message"] == "'texts.3' cannot be empty or whitespace only"


def test_async_json_refuses_a_blank_text_and_stores_no_job(client: TestClient) -> None:
    before = _job_count(client)
    response = client.post("/api/predict/async", json={"texts": [GOOD, "  "], "model": "sentiment"})
    error = error_of(response, 422, "invalid_input")
    assert error["message"] == "'texts.1' cannot be empty or whitespace only"
    assert _job_count(client) == before


def test_async_single_text_refuses_blank(client: TestClient) -> None:
    response = client.post("/api/predict/async", json={"text": "", "model": "sentiment"})
    assert "cannot be empty or whitespace only" in error_of(response, 422)["message"]


@pytest.mark.parametrize(
    ("filename", "content", "line"),
    [
        ("t.jsonl", "\n".join(json.dumps({"text": t}) for t in [GOOD, GOOD, " \t"]), 3),
        ("t.jsonl", f'{{"text": "{GOOD}"}}\n\n{{"text": ""}}\n', 3),
        ("t.csv", f'id,text\n1,"{GOOD}"\n2,   \n3,"{GOOD}"\n', 3),
        ("t.csv", f'text\n"{GOOD}"\n"two\nlines"\n""\n', 5),
    ],
    ids=["jsonl-whitespace", "jsonl-empty-after-blank-line", "csv-spaces", "csv-after-multiline"],
)
def test_async_upload_refuses_a_blank_text_naming_its_line(
    client: TestClient, filename: str, content: str, line: int
) -> None:
    before = _job_count(client)
    response = client.post(
        "/api/predict/async",
        files={"file": (filename, content.encode())},
        data={"model": "sentiment"},
    )
    error = error_of(response, 422, "invalid_input")
    assert error["message"] == f"'line {line}' cannot be empty or whitespace only"
    assert _job_count(client) == before


def v2_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


@pytest.mark.parametrize("blank", BLANKS, ids=BLANK_IDS)
def test_v2_refuses_a_blank_bytes_element_with_400(client: TestClient, blank: str) -> None:
    tensor = {"name": "text", "shape": [3], "datatype": "BYTES", "data": [GOOD, blank, GOOD]}
    response = client.post("/v2/models/sentiment/infer", json={"inputs": [tensor]})
    assert v2_error(response, 400) == "'text[1]' cannot be empty or whitespace only"


def test_v2_still_answers_non_blank_bytes(client: TestClient) -> None:
    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": [GOOD, " a "]}
    response = client.post("/v2/models/sentiment/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
