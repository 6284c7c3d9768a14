"""The fast lane and the FastAPI routes answer /api/predict and /api/predict/batch identically:
the same bodies, valid and invalid, sent to a server with the fast lane and to one without it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from mlserve.config import Settings
from mlserve.schemas import ModelMetadata
from mlserve.server.app import create_app
from mlserve.server.middleware.fastlane import FastPredictMiddleware

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}

VALID: list[Any] = [
    {"text": "I love this product", "model": "sentiment"},
    {"text": "Terrible service", "model": "sentiment@production"},
    {"text": "It is a blue box", "model": "sentiment", "model_version": 1},
    {"text": "It is a blue box", "model": "sentiment", "model_version": "production"},
    {"features": FLOWER, "model": "iris"},
    {"features": [6.3, 3.3, 6.0, 2.5], "model": "iris:1"},
    {"features": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}, "model": "petal"},
    {"features": FLOWER, "model": "svc"},  # no predict_proba: confidence null
]
INVALID: list[Any] = [
    {"text": "no model named, several served"},
    {"text": "x", "model": "nope"},
    {"text": "x", "model": "sentiment:99"},
    {"text": "x", "model": "sentiment@nowhere"},
    {"text": 5, "model": "sentiment"},
    {"text": "x", "features": [1.0], "model": "sentiment"},
    {"text": None, "features": None, "model": "sentiment"},
    {"model": "sentiment"},
    {},
    [],
    "just a string",
    {"text": "x", "model": "sentiment", "extra": 1},
    {"text": "x", "model": "iris"},
    {"features": [1.0, 2.0], "model": "iris"},
    {"features": {"sepal_length": "wide"}, "model": "iris"},
    {"features": {**FLOWER, "petal_width": True}, "model": "iris"},
    {"features": FLOWER, "model": "sentiment"},
    {"text": "x" * 20_000, "model": "sentiment"},
    {"text": "", "model": "sentiment"},
    {"text": "   ", "model": "sentiment"},
    {"text": "x", "model": "sentiment", "model_version": 1.5},
    {"text": "x", "model": 7},
]
TEXTS = ["I love this product", "Terrible service", "It is a blue box"]
VALID_BATCH: list[Any] = [
    {"texts": TEXTS, "model": "sentiment"},
    {"texts": TEXTS * 30, "model": "sentiment@production"},  # ~15 KB answer: gzip
    {"texts": TEXTS},  # the only text model served answers
    {"texts": ["one"], "model": "sentiment", "model_version": 1},
    {"records": [FLOWER, FLOWER], "model": "iris"},
    {"records": [[6.3, 3.3, 6.0, 2.5], [5.1, 3.5, 1.4, 0.2]], "model": "iris:1"},
    {"records": [FLOWER], "model": "svc"},
]
INVALID_BATCH: list[Any] = [
    {"records": [FLOWER]},  # several tabular models served, none named
    {"texts": TEXTS, "records": [FLOWER], "model": "sentiment"},
    {"model": "sentiment"},
    {"texts": [], "model": "sentiment"},
    {"texts": ["x"] * 101, "model": "sentiment"},  # server.max_batch_items
    {"texts": ["fine", ""], "model": "sentiment"},
    {"texts": ["fine", 5], "model": "sentiment"},
    {"texts": "not a list", "model": "sentiment"},
    {"texts": TEXTS, "model": "nope"},
    {"texts": TEXTS, "model": "iris"},
    {"records": [FLOWER, [1.0]], "model": "iris"},
    {"texts": TEXTS, "model": "sentiment", "extra": 1},
    [],
]
RAW_INVALID: list[bytes] = [
    b'{"text": "a", "text": "b", "model": "sentiment"}',  # duplicate keys
    b"not json",
    b'{"text": "unterminated',
    b"",
]


@pytest.fixture
def pair(
    all_models: dict[str, ModelMetadata], make_settings: Callable[..., Settings]
) -> Iterator[tuple[TestClient, TestClient]]:
    """(with the fast lane, route only): two servers over the same registry."""
    with ExitStack() as stack:
        clients = []
        for fast in (True, False):
            app = create_app(make_settings(), fast_lane=fast)
            clients.append(stack.enter_context(TestClient(app, raise_server_exceptions=False)))
        yield clients[0], clients[1]


ANSWER_HEADERS = ("content-type", "content-encoding", "vary", "x-cache", "x-cache-hits")


def _answer(
    client: TestClient, body: bytes, request_id: str, path: str = "/api/predict"
) -> tuple[int, Any, dict[str, str]]:
    response = client.post(
        path,
        content=body,
        headers={"content-type": "application/json", "x-request-id": request_id},
    )
    payload = response.json()
    if isinstance(payload, dict):
        for timed in ("processing_time_ms", "total_processing_time_ms"):
            payload.pop(timed, None)  # a measured time, never equal twice
    headers = {k: v for k, v in response.headers.items() if k in ANSWER_HEADERS}
    return response.status_code, payload, headers


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the requests the fast lane itself scored (not handed to the route)."""
    calls: list[int] = []
    original = FastPredictMiddleware._predict
    original_batch = FastPredictMiddleware._predict_batch

    async def counted_batch(self: FastPredictMiddleware, *args: Any, **kwargs: Any) -> None:
        calls.append(2)
        await original_batch(self, *args, **kwargs)

    async def counted(self: FastPredictMiddleware, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        await original(self, *args, **kwargs)

    monkeypatch.setattr(FastPredictMiddleware, "_predict", counted)
    monkeypatch.setattr(FastPredictMiddleware, "_predict_batch", counted_batch)
    return calls


@pytest.mark.parametrize("body", VALID + INVALID, ids=lambda b: orjson.dumps(b).decode()[:60])
def test_fast_lane_and_route_give_the_same_answer(
    pair: tuple[TestClient, TestClient], body: Any, lane_calls: list[int]
) -> None:
    fast, routed = pair
    raw = orjson.dumps(body)
    assert _answer(fast, raw, "same-id") == _answer(routed, raw, "same-id")
    if body in VALID:
        assert lane_calls == [1]  # answered by the fast lane, not handed over


@pytest.mark.parametrize(
    "body", VALID_BATCH + INVALID_BATCH, ids=lambda b: orjson.dumps(b).decode()[:60]
)
def test_fast_lane_and_route_give_the_same_batch_answer(
    pair: tuple[TestClient, TestClient], body: Any, lane_calls: list[int]
) -> None:
    fast, routed = pair
    raw = orjson.dumps(body)
    answer = _answer(fast, raw, "same-id", "/api/predict/batch")
    assert answer == _answer(routed, raw, "same-id", "/api/predict/batch")
    if body in VALID_BATCH:
        assert lane_calls == [2]  # answered by the fast lane, not handed over
        status, payload, headers = answer
        assert status == 200
        assert payload["batch_size"] == len(body.get("texts") or body.get("records"))
        assert payload["predictions"][0]["id"] == "same-id-0"
    else:
        assert answer[0] in (404, 422), answer


def test_a_large_batch_answer_is_gzipped_by_the_fast_lane(
    pair: tuple[TestClient, TestClient],
) -> None:
    fast, _ = pair
    status, payload, headers = _answer(
        fast, orjson.dumps(VALID_BATCH[1]), "gz", "/api/predict/batch"
    )
    assert status == 200 and payload["batch_size"] == 90
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("raw", RAW_INVALID, ids=lambda b: b.decode()[:40] or "empty")
@pytest.mark.parametrize("path", ["/api/predict", "/api/predict/batch"])
def test_unparseable_bodies_are_refused_alike(
    pair: tuple[TestClient, TestClient], raw: bytes, path: str
) -> None:
    fast, routed = pair
    status, payload, headers = _answer(fast, raw, "same-id", path)
    assert status == 422
    assert (status, payload, headers) == _answer(routed, raw, "same-id", path)


def test_valid_answers_carry_the_model_and_prediction(
    pair: tuple[TestClient, TestClient],
) -> None:
    fast, _ = pair
    status, payload, _ = _answer(fast, orjson.dumps(VALID[4]), "rid-1")
    assert status == 200
    assert payload["model"] == "iris" and payload["version"] == 1
    assert payload["prediction"] == "setosa"
    assert payload["request_id"] == "rid-1"
    assert abs(sum(payload["probabilities"].values()) - 1.0) < 1e-9
