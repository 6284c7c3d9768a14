"""Feedback and live quality through the server: predictions remembered on every prediction
path, labels in (POST /api/feedback), figures out (GET /api/models/{name}/quality, /metrics)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.clock import Clock
from support.data import SENTENCES, TEXT_METRICS
from support.metrics import scrape, value_or_none

from mlserve.feedback import input_hash
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata, QualityReport

from .conftest import error_of

# Through the fast path (a plain request) and through the FastAPI route (an Origin header makes
# the fast path hand the request over; no CORS origins are configured, so nothing else changes).
PATHS = {"fast": {}, "route": {"Origin": "http://client.example"}}
TEXTS = [t for texts in SENTENCES.values() for t in texts]
CLASSES = ["negative", "neutral", "positive"]


@pytest.fixture
def client(
    text_meta: ModelMetadata, iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> TestClient:
    """sentiment (text) and iris (tabular), feedback on (the defaults)."""
    return serve()


def predict(client: TestClient, text: str, path: str = "fast") -> dict[str, Any]:
    response = client.post(
        "/api/predict", json={"text": text, "model": "sentiment"}, headers=PATHS[path]
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def send(client: TestClient, request_id: str, label: Any) -> Any:
    return client.post("/api/feedback", json={"request_id": request_id, "label": label})


def quality(client: TestClient, name: str = "sentiment", **params: Any) -> QualityReport:
    response = client.get(f"/api/models/{name}/quality", params=params)
    assert response.status_code == 200, response.text
    return QualityReport.model_validate(response.json())


def other_class(label: str) -> str:
    return next(c for c in CLASSES if c != label)


def stored(client: TestClient, *ids: str) -> dict[str, Any]:
    """What the store holds for these ids (after a flush), read on the app's event loop."""
    service = client.app.state.mlserve.quality  # type: ignore[attr-defined]

    async def read() -> Any:
        await service.recorder.flush()
        return await service.store.lookup(list(ids))

    return client.portal.call(read)  # type: ignore[union-attr,no-any-return]


def metric(client: TestClient, name: str, **labels: str) -> float | None:
    """A sample's value on the app's /metrics (None when not exported)."""
    return value_or_none(scrape(client), name, **labels)


def refresh_metrics(client: TestClient) -> None:
    """Run the background refresh now instead of waiting for its interval."""
    service = client.app.state.mlserve.quality  # type: ignore[attr-defined]
    client.portal.call(service.refresh_metrics)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- live accuracy
def test_seven_right_labels_of_ten_give_exactly_0_7(client: TestClient) -> None:
    from sklearn.metrics import confusion_matrix, f1_score

    served = [predict(client, text) for text in TEXTS[:10]]
    predicted = [p["prediction"] for p in served]
    # The first 7 labels agree with what the model answered, the last 3 do not.
    truth = predicted[:7] + [other_class(p) for p in predicted[7:]]
    for answer, label in zip(served, truth, strict=True):
        assert send(client, answer["request_id"], label).status_code == 200

    (version,) = quality(client).versions

    assert version.version == text_version(client)
    assert version.serving
    assert version.predictions == 10
    assert version.feedback == 10
    assert (version.rolling.labelled, version.rolling.correct) == (10, 7)
    assert version.rolling.accuracy == 0.7
    assert version.rolling.macro_f1 == pytest.approx(f1_score(truth, predicted, average="macro"))
    for window in ("1h", "24h", "7d"):
        assert version.windows[window].accuracy == 0.7
    assert version.confusion_matrix.labels == CLASSES
    assert (
        version.confusion_matrix.matrix
        == confusion_matrix(truth, predicted, labels=CLASSES).tolist()
    )
    assert version.training.accuracy == TEXT_METRICS["accuracy"]


def text_version(client: TestClient) -> int:
    version: int = client.get("/api/models/sentiment").json()["version"]
    return version


def test_the_rolling_window_covers_the_last_n_labels(client: TestClient) -> None:
    served = [predict(client, text) for text in TEXTS[:6]]
    # Oldest three wrong, newest three right.
    for i, answer in enumerate(served):
        label = answer["prediction"] if i >= 3 else other_class(answer["prediction"])
        send(client, answer["request_id"], label)

    (last3,) = quality(client, window=3).versions
    (all6,) = quality(client).versions

    assert (last3.rolling.window, last3.rolling.labelled, last3.rolling.accuracy) == (3, 3, 1.0)
    assert (all6.rolling.labelled, all6.rolling.accuracy) == (6, 0.5)


def test_a_second_label_replaces_the_first_without_double_counting(client: TestClient) -> None:
    answer = predict(client, TEXTS[0])
    right, wrong = answer["prediction"], other_class(answer["prediction"])

    first = send(client, answer["request_id"], wrong)
    second = send(client, answer["request_id"], right)
    third = send(client, answer["request_id"], right)

    assert first.json()["outcome"] == "accepted"
    assert first.json()["correct"] is False
    assert second.json()["outcome"] == "replaced"
    assert second.json()["correct"] is True
    assert third.json()["outcome"] == "replaced"
    (version,) = quality(client).versions
    assert (version.feedback, version.rolling.labelled, version.rolling.accuracy) == (1, 1, 1.0)
    assert metric(client, "mlserve_feedback_total", model="sentiment", outcome="accepted") == 1
    assert metric(client, "mlserve_feedback_total", model="sentiment", outcome="replaced") == 2


def test_a_label_answer_says_what_was_stored(client: TestClient) -> None:
    answer = predict(client, TEXTS[0])

    body = send(client, answer["request_id"], answer["prediction"]).json()

    assert body == {
        "request_id": answer["request_id"],
        "outcome": "accepted",
        "model": "sentiment",
        "version": answer["version"],
        "predicted": answer["prediction"],
        "label": answer["prediction"],
        "correct": True,
        "error": None,
    }


# ---------------------------------------------------------------------------- every path records
@pytest.mark.parametrize("path", PATHS)
def test_both_predict_paths_record_the_same_record(client: TestClient, path: str) -> None:
    answer = predict(client, "The staff were lovely and helpful", path)

    record = stored(client, answer["request_id"])[answer["request_id"]]

    assert (record.model, record.version) == ("sentiment", answer["version"])
    assert record.predicted == answer["prediction"]
    assert record.confidence == answer["confidence"]
    assert record.input_hash == input_hash("The staff were lovely and helpful")
    assert send(client, answer["request_id"], answer["prediction"]).status_code == 200


def test_tabular_predictions_are_recorded_with_their_prepared_row(client: TestClient) -> None:
    by_name = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    answer = client.post("/api/predict", json={"features": by_name, "model": "iris"}).json()

    record = stored(client, answer["request_id"])[answer["request_id"]]

    assert record.input_hash == input_hash([5.1, 3.5, 1.4, 0.2])  # by name or by position alike
    assert record.predicted == answer["prediction"] == "setosa"


def test_batch_rows_have_ids_that_take_labels(client: TestClient) -> None:
    response = client.post(
        "/api/predict/batch", json={"texts": TEXTS[:4], "model": "sentiment"}
    ).json()
    rows = response["predictions"]
    assert [r["id"] for r in rows] == [f"{response['request_id']}-{i}" for i in range(4)]

    result = client.post(
        "/api/feedback",
        json={"items": [{"request_id": r["id"], "label": r["prediction"]} for r in rows]},
    )

    assert result.status_code == 200, result.text
    assert result.json()["accepted"] == 4
    assert quality(client).versions[0].rolling.accuracy == 1.0


def test_a_client_request_id_names_the_prediction(client: TestClient) -> None:
    response = client.post(
        "/api/predict",
        json={"text": TEXTS[0], "model": "sentiment"},
        headers={"X-Request-ID": "order-1234"},
    )
    assert response.json()["request_id"] == "order-1234"

    assert send(client, "order-1234", response.json()["prediction"]).status_code == 200


def test_v2_inference_rows_are_recorded_as_request_id_and_row(client: TestClient) -> None:
    texts = TEXTS[:3]
    response = client.post(
        "/v2/models/sentiment/infer",
        json={"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]},
        headers={"X-Request-ID": "v2-call"},
    )
    assert response.status_code == 200, response.text
    labels = next(o for o in response.json()["outputs"] if o["name"] == "label")["data"]

    records = stored(client, "v2-call-0", "v2-call-1", "v2-call-2")

    assert [records[f"v2-call-{i}"].predicted for i in range(3)] == labels
    assert [records[f"v2-call-{i}"].input_hash for i in range(3)] == [input_hash(t) for t in texts]
    assert send(client, "v2-call-2", labels[2]).json()["outcome"] == "accepted"


def test_failed_predictions_are_not_recorded(client: TestClient) -> None:
    response = client.post(
        "/api/predict",
        json={"features": [1.0], "model": "iris"},
        headers={"X-Request-ID": "bad-input"},
    )
    assert response.status_code == 422

    assert stored(client, "bad-input") == {}


# ---------------------------------------------------------------------------- batches of labels
def test_a_batch_of_labels_reports_each_outcome(client: TestClient) -> None:
    answer = predict(client, TEXTS[0])
    rid = answer["request_id"]

    response = client.post(
        "/api/feedback",
        json={
            "items": [
                {"request_id": rid, "label": other_class(answer["prediction"])},
                {"request_id": "never-made", "label": "positive"},
                {"request_id": rid, "label": "not-a-class"},
                {"request_id": rid, "label": answer["prediction"]},
            ]
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("accepted", "replaced", "unknown", "invalid")} == {
        "accepted": 1,
        "replaced": 1,
        "unknown": 1,
        "invalid": 1,
    }
    assert [item["outcome"] for item in body["items"]] == [
        "accepted",
        "unknown",
        "invalid",
        "replaced",
    ]
    assert "never-made" in body["items"][1]["error"]
    assert "not-a-class" in body["items"][2]["error"]
    (version,) = quality(client).versions
    assert (version.feedback, version.rolling.accuracy) == (1, 1.0)  # the last label stands


# ---------------------------------------------------------------------------- bad inputs
def test_an_unknown_request_id_is_a_404(client: TestClient) -> None:
    error = error_of(send(client, "no-such-prediction", "positive"), 404, "prediction_not_found")
    assert "no-such-prediction" in error["message"]
    assert metric(client, "mlserve_feedback_total", model="", outcome="unknown") == 1


def test_a_label_the_model_does_not_know_is_a_422(client: TestClient) -> None:
    answer = predict(client, TEXTS[0])

    error = error_of(send(client, answer["request_id"], "Positive"), 422, "invalid_label")

    assert "Positive" in error["message"]
    assert "negative, neutral, positive" in error["message"]
    assert quality(client).versions[0].feedback == 0


def test_a_label_of_a_tabular_model_may_be_sent_as_its_class(client: TestClient) -> None:
    answer = client.post("/api/predict", json={"features": [6.7, 3.0, 5.2, 2.3], "model": "iris"})
    rid = answer.json()["request_id"]

    assert error_of(send(client, rid, 2), 422, "invalid_label")
    assert send(client, rid, "virginica").json()["correct"] is True


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"request_id": "x"},
        {"label": "positive"},
        {"request_id": "x", "label": None},
        {"request_id": "", "label": "positive"},
        {"request_id": "x", "label": "positive", "items": []},
        {"items": []},
        {"items": [{"request_id": "x"}]},
        {"items": [{"request_id": "x", "label": "positive", "extra": 1}]},
        {"request_id": "x", "label": "positive", "model": "sentiment"},
        {"request_id": "x", "label": ["positive"]},
        {"request_id": 12, "label": "positive"},
        {"request_id": "x" * 201, "label": "positive"},
        [{"request_id": "x", "label": "positive"}],
        "positive",
    ],
)
def test_a_malformed_body_is_a_422(client: TestClient, body: Any) -> None:
    error_of(client.post("/api/feedback", json=body), 422, "invalid_input")


def test_invalid_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/api/feedback", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    error_of(response, 422, "invalid_input")


def test_too_many_labels_in_one_request_is_a_422(
    serve: Callable[..., TestClient], text_meta: ModelMetadata
) -> None:
    client = serve(feedback={"max_items": 3})
    items = [{"request_id": f"r{i}", "label": "positive"} for i in range(4)]

    error = error_of(client.post("/api/feedback", json={"items": items}), 422, "invalid_input")

    assert "feedback.max_items" in error["message"]


def test_quality_of_an_unknown_model_or_version_is_a_404(client: TestClient) -> None:
    error_of(client.get("/api/models/nothing/quality"), 404)
    error_of(client.get("/api/models/sentiment/quality", params={"version": 99}), 404)
    error_of(client.get("/api/models/sentiment/quality", params={"window": 0}), 422)


def test_a_model_without_predictions_reports_empty_figures(client: TestClient) -> None:
    (version,) = quality(client, "iris").versions

    assert (version.predictions, version.feedback) == (0, 0)
    assert version.rolling.accuracy is None
    assert version.windows["24h"].accuracy is None
    assert version.drift.status == "unavailable"  # registered without hold-out figures


# ---------------------------------------------------------------------------- expiry and bounds
def test_a_label_for_an_expired_prediction_is_a_404(
    serve: Callable[..., TestClient], text_meta: ModelMetadata
) -> None:
    client = serve(feedback={"retention_s": 3600})
    service = client.app.state.mlserve.quality  # type: ignore[attr-defined]
    clock = Clock(service.store.clock())
    service.recorder.clock = service.store.clock = clock
    answer = predict(client, TEXTS[0])

    clock.advance(3599)
    assert send(client, answer["request_id"], answer["prediction"]).status_code == 200
    clock.advance(2)

    error_of(send(client, answer["request_id"], answer["prediction"]), 404, "prediction_not_found")
    (version,) = quality(client).versions  # the serving version, with nothing remembered
    assert (version.predictions, version.feedback) == (0, 0)


def test_the_store_keeps_at_most_max_records(
    serve: Callable[..., TestClient], text_meta: ModelMetadata
) -> None:
    client = serve(feedback={"max_records": 5})
    answers = [predict(client, text) for text in TEXTS[:8]]

    records = stored(client, *(a["request_id"] for a in answers))

    assert set(records) == {a["request_id"] for a in answers[-5:]}
    error_of(send(client, answers[0]["request_id"], "positive"), 404, "prediction_not_found")
    assert quality(client).versions[0].predictions == 8  # made; the count is kept per minute


# ---------------------------------------------------------------------------- metrics
def test_metrics_report_live_and_hold_out_accuracy(client: TestClient) -> None:
    served = [predict(client, text) for text in TEXTS[:4]]
    for i, answer in enumerate(served):  # 3 of 4 right
        label = answer["prediction"] if i else other_class(answer["prediction"])
        send(client, answer["request_id"], label)

    refresh_metrics(client)

    labels = {"model": "sentiment", "version": str(served[0]["version"])}
    assert metric(client, "mlserve_model_live_accuracy_ratio", **labels) == 0.75
    assert metric(client, "mlserve_model_live_labelled", **labels) == 4
    assert (
        metric(client, "mlserve_model_holdout_accuracy_ratio", **labels) == TEXT_METRICS["accuracy"]
    )
    # iris has no labels: a hold-out figure, no live one.
    assert metric(client, "mlserve_model_live_accuracy_ratio", model="iris") is None
    assert metric(client, "mlserve_prediction_drift_psi", model="sentiment") is None  # no figures


def test_metrics_refresh_on_their_interval(
    serve: Callable[..., TestClient], text_meta: ModelMetadata
) -> None:
    import time

    client = serve(feedback={"metrics_interval_s": 0.05})
    answer = predict(client, TEXTS[0])
    send(client, answer["request_id"], answer["prediction"])

    deadline = time.monotonic() + 10
    while metric(client, "mlserve_model_live_accuracy_ratio", model="sentiment") is None:
        assert time.monotonic() < deadline, "the live accuracy metric never appeared"
        time.sleep(0.05)  # polling for the background refresh
    assert metric(client, "mlserve_model_live_accuracy_ratio", model="sentiment") == 1.0


# ---------------------------------------------------------------------------- off, or no store
def test_with_feedback_off_predictions_go_on_and_feedback_is_a_404(
    serve: Callable[..., TestClient], text_meta: ModelMetadata
) -> None:
    client = serve(feedback={"enabled": False})
    answer = predict(client, TEXTS[0])
    batch = client.post("/api/predict/batch", json={"texts": TEXTS[:2], "model": "sentiment"})
    assert batch.json()["predictions"][1]["id"].endswith("-1")

    error_of(send(client, answer["request_id"], "positive"), 404, "feedback_disabled")
    error_of(client.get("/api/models/sentiment/quality"), 404, "feedback_disabled")


def test_a_store_that_cannot_open_answers_503_and_predictions_go_on(
    serve: Callable[..., TestClient], text_meta: ModelMetadata, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    client = serve(feedback={"database": str(blocker / "feedback.sqlite3")})

    answer = predict(client, TEXTS[0])

    error_of(send(client, answer["request_id"], "positive"), 503, "feedback_unavailable")
    error_of(client.get("/api/models/sentiment/quality"), 503, "feedback_unavailable")
    assert metric(client, "mlserve_feedback_dropped_total") == 1


# ---------------------------------------------------------------------------- drift
@pytest.fixture(scope="session")
def corpus_model() -> Any:
    """The default text model trained on the bundled corpus (hold-out figures included), and
    the held-out texts exactly as training split them."""
    from sklearn.model_selection import train_test_split

    from mlserve.training import load_sample, train

    dataset = load_sample("sentiment")
    result = train(dataset, test_size=0.2, seed=42)
    _, held_out, _, _ = train_test_split(
        dataset.texts, dataset.target, test_size=0.2, random_state=42, stratify=dataset.target
    )
    negative = [t for t, y in zip(dataset.texts, dataset.target, strict=True) if y == "negative"]
    return result, held_out, negative


@pytest.fixture
def corpus_client(
    corpus_model: Any, registry: Registry, serve: Callable[..., TestClient]
) -> TestClient:
    result, _, _ = corpus_model
    registry.register_estimator(
        result.estimator,
        name="corpus",
        aliases=["production"],
        metrics=result.metrics,
        training=result.training,
    )
    return serve(feedback={"drift_min_predictions": 100})


def batch_predict(client: TestClient, texts: list[str]) -> None:
    for start in range(0, len(texts), 100):
        chunk = texts[start : start + 100]
        response = client.post("/api/predict/batch", json={"texts": chunk, "model": "corpus"})
        assert response.status_code == 200, response.text


@pytest.mark.slow
def test_replaying_the_hold_out_set_shows_no_drift(
    corpus_client: TestClient, corpus_model: Any
) -> None:
    _, held_out, _ = corpus_model
    batch_predict(corpus_client, held_out)

    (version,) = quality(corpus_client, "corpus").versions

    drift = version.drift
    assert drift.predictions == len(held_out)
    assert drift.status == "stable"
    assert drift.psi is not None and drift.psi < 0.01
    assert drift.confidence is not None and drift.confidence.psi < 0.05
    assert {c.label for c in drift.classes} == set(CLASSES)
    assert version.training.accuracy is not None and version.training.accuracy > 0.7
    refresh_metrics(corpus_client)
    psi = metric(corpus_client, "mlserve_prediction_drift_psi", model="corpus")
    assert psi is not None and psi < 0.01


@pytest.mark.slow
def test_a_sample_of_the_corpus_shows_little_drift(corpus_client: TestClient) -> None:
    from mlserve.training import load_sample

    texts = random.Random(1).sample(load_sample("sentiment").texts, 400)
    batch_predict(corpus_client, texts)

    drift = quality(corpus_client, "corpus").versions[0].drift

    assert drift.status == "stable"
    assert drift.psi is not None and drift.psi < 0.1


@pytest.mark.slow
def test_sending_only_negative_texts_shows_significant_drift(
    corpus_client: TestClient, corpus_model: Any
) -> None:
    _, _, negative = corpus_model
    batch_predict(corpus_client, negative[:300])

    drift = quality(corpus_client, "corpus").versions[0].drift

    assert drift.status == "significant"
    assert drift.psi is not None and drift.psi > 0.25
    by_class = {c.label: c for c in drift.classes}
    assert by_class["negative"].live > 0.8
    assert by_class["negative"].live > by_class["negative"].training
    refresh_metrics(corpus_client)
    psi = metric(corpus_client, "mlserve_prediction_drift_psi", model="corpus")
    assert psi is not None and psi > 0.25


@pytest.mark.slow
def test_too_few_recent_predictions_give_no_drift_figure(
    corpus_client: TestClient, corpus_model: Any
) -> None:
    _, _, negative = corpus_model
    batch_predict(corpus_client, negative[:99])

    drift = quality(corpus_client, "corpus").versions[0].drift

    assert drift.status == "insufficient_data"
    assert drift.psi is None
    assert "99" in (drift.reason or "")
