"""POST /api/predict/batch: many inputs, in order, in one vectorized model call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, SENTENCES, UNSEEN_TEXTS

from mlserve.runtime.model import LoadedModel
from mlserve.schemas import ModelMetadata

from .conftest import error_of

TEXTS = UNSEEN_TEXTS[:5]


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows per LoadedModel.predict call (the one vectorized call a batch must make).

    Request it before the client: a batcher binds the model's predict when the app starts."""
    calls: list[int] = []
    original = LoadedModel.predict

    def spy(self: LoadedModel, rows: Any) -> Any:
        if self.version:  # not a registration's smoke prediction (version 0: not yet numbered)
            calls.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(LoadedModel, "predict", spy)
    return calls


def test_text_batch_answers_in_order_like_the_estimator(
    client: TestClient, text_estimator: Any, text_meta: ModelMetadata
) -> None:
    response = client.post("/api/predict/batch", json={"texts": TEXTS, "model": "sentiment"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["prediction"] for p in body["predictions"]] == list(text_estimator.predict(TEXTS))
    proba = text_estimator.predict_proba(TEXTS)
    for item, row in zip(body["predictions"], proba, strict=True):
        assert item["confidence"] == pytest.approx(row.max(), abs=1e-12)
        assert sum(item["probabilities"].values()) == pytest.approx(1.0)
    assert body["batch_size"] == len(TEXTS)
    assert body["model"] == "sentiment"
    assert body["version"] == text_meta.version
    assert body["total_processing_time_ms"] > 0
    assert body["request_id"] == response.headers["x-request-id"]


def test_records_batch_accepts_lists_and_objects_in_order(
    client: TestClient, iris: tuple[Any, Any], iris_estimator: Any
) -> None:
    x, _ = iris
    rows = x[::15]  # one of every 15 flowers: all three species
    records: list[Any] = [
        dict(zip(IRIS_FEATURES, r.tolist(), strict=True)) if i % 2 else r.tolist()
        for i, r in enumerate(rows)
    ]

    response = client.post("/api/predict/batch", json={"records": records, "model": "iris"})

    assert response.status_code == 200, response.text
    got = [p["prediction"] for p in response.json()["predictions"]]
    assert got == [str(v) for v in iris_estimator.predict(rows)]
    assert len(set(got)) == 3


def test_regression_batch_gives_values_and_null_confidence(
    client: TestClient, iris: tuple[Any, Any], regression_estimator: Any
) -> None:
    rows = iris[0][:7, :3]

    response = client.post("/api/predict/batch", json={"records": rows.tolist(), "model": "petal"})

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    np.testing.assert_allclose(
        [p["prediction"] for p in predictions], regression_estimator.predict(rows)
    )
    assert all(p["confidence"] is None and p["probabilities"] is None for p in predictions)


def test_a_batch_is_one_vectorized_model_call(model_calls: list[int], client: TestClient) -> None:
    texts = [t for ts in SENTENCES.values() for t in ts]

    response = client.post("/api/predict/batch", json={"texts": texts, "model": "sentiment"})

    assert response.status_code == 200, response.text
    assert model_calls == [len(texts)]


def test_a_batch_larger_than_max_batch_size_stays_one_call(
    text_meta: ModelMetadata, serve: Any, model_calls: list[int]
) -> None:
    client = serve(batching={"max_batch_size": 4})

    response = client.post("/api/predict/batch", json={"texts": TEXTS * 3})

    assert response.status_code == 200, response.text
    assert model_calls == [15]


def test_by_default_batches_queued_behind_a_call_share_the_next_one(
    text_meta: ModelMetadata, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default batching.max_batch_size (256), five batches of 50 texts that queued
    while the model was busy go in one call: a call's fixed cost is paid once, not five times
    (at 64 each went alone)."""
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()
    original = LoadedModel.predict

    def held(self: LoadedModel, rows: Any) -> Any:  # the first call waits for the others
        if self.version:  # not a registration's smoke prediction
            calls.append(len(rows))
            if len(calls) == 1:
                entered.set()
                assert release.wait(10)
        return original(self, rows)

    monkeypatch.setattr(LoadedModel, "predict", held)
    client = serve()
    batcher = client.app.state.mlserve.manager.models["sentiment"].current.batcher  # type: ignore[attr-defined]
    batch = {"texts": TEXTS * 10}

    def post() -> int:
        return client.post("/api/predict/batch", json=batch).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(post)
        assert entered.wait(10)
        queued = [pool.submit(post) for _ in range(5)]
        deadline = time.monotonic() + 10
        while batcher.queue_depth < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        statuses = [first.result(10), *(f.result(10) for f in queued)]

    assert statuses == [200] * 6
    assert calls == [50, 250]


@pytest.mark.parametrize("field", ["texts", "records"])
def test_empty_batch_is_422(client: TestClient, field: str) -> None:
    model = "sentiment" if field == "texts" else "iris"

    error = error_of(client.post("/api/predict/batch", json={field: [], "model": model}), 422)

    assert field in error["message"]


def test_batch_over_max_batch_items_is_422(text_meta: ModelMetadata, serve: Any) -> None:
    client = serve(server={"max_batch_items": 3})

    ok = client.post("/api/predict/batch", json={"texts": TEXTS[:3]})
    too_many = client.post("/api/predict/batch", json={"texts": TEXTS[:4]})

    assert ok.status_code == 200, ok.text
    error = error_of(too_many, 422, "invalid_input")
    assert "texts" in error["message"] and "3" in error["message"]


def test_batch_with_both_or_neither_field_is_422(client: TestClient) -> None:
    both = {"texts": ["a"], "records": [[1, 2, 3, 4]], "model": "iris"}

    error_of(client.post("/api/predict/batch", json=both), 422, "invalid_input")
    error_of(client.post("/api/predict/batch", json={"model": "iris"}), 422, "invalid_input")


def test_one_bad_record_fails_the_batch_naming_its_index(
    model_calls: list[int], client: TestClient
) -> None:
    records = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2]]

    response = client.post("/api/predict/batch", json={"records": records, "model": "iris"})

    error = error_of(response, 422, "invalid_input")
    assert "records.1" in error["message"]
    assert model_calls == []


def test_text_over_max_text_length_in_a_batch_names_its_index(
    text_meta: ModelMetadata, serve: Any
) -> None:
    client = serve(server={"max_text_length": 10})

    response = client.post("/api/predict/batch", json={"texts": ["short", "x" * 11]})

    assert "texts.1" in error_of(response, 422, "invalid_input")["message"]


def test_batch_counts_every_prediction(client: TestClient) -> None:
    client.post("/api/predict/batch", json={"texts": TEXTS, "model": "sentiment"})

    detailed = client.get("/api/health/detailed").json()

    counts = {m["name"]: m["predictions"] for m in detailed["models"]}
    assert counts["sentiment"] == len(TEXTS)
