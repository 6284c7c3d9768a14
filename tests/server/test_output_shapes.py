"""Every kind of model the registry detects answers over HTTP (REST and V2) with its own shape:
multi-output regression (a list of values), multilabel (the outputs that are on),
decision_function scores, anomaly detectors (label and score_samples) and clusterers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlserve.schemas import ModelMetadata

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.4, 2.9, 1.4, 0.2]]


def _batch(client: TestClient, model: str, rows: list[list[float]] = ROWS) -> list[Any]:
    response = client.post("/api/predict/batch", json={"records": rows, "model": model})
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def _v2(client: TestClient, model: str, rows: list[list[float]] = ROWS) -> dict[str, Any]:
    body = {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [len(rows), 4], "data": rows}]
    }
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


@pytest.fixture
def shapes(
    register: Callable[..., ModelMetadata],
    iris: tuple[Any, Any],
    serve: Callable[..., TestClient],
) -> tuple[TestClient, dict[str, Any], dict[str, ModelMetadata]]:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import IsolationForest, RandomForestRegressor
    from sklearn.linear_model import RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    x, y = iris
    x = np.asarray(x, dtype=float)
    labels = np.asarray([str(v) for v in y])
    two = np.column_stack([x[:, 2] * 2.0, x[:, 3] - 1.0])  # two targets
    tags = np.column_stack([x[:, 0] > 5.8, x[:, 1] > 3.0, x[:, 2] > 4.0]).astype(int)
    fitted = {
        "multi": RandomForestRegressor(n_estimators=5, random_state=0).fit(x, two),
        "tags": KNeighborsClassifier(n_neighbors=3).fit(x, tags),
        "ridge": RidgeClassifier().fit(x, labels),
        "binary": LinearSVC().fit(x, labels == labels[0]),
        "outliers": IsolationForest(n_estimators=20, random_state=0).fit(x),
        "clusters": KMeans(n_clusters=3, n_init=2, random_state=0).fit(x),
    }
    metas = {name: register(est, name) for name, est in fitted.items()}
    return serve(raise_server_exceptions=False), fitted, metas


def test_each_task_is_detected_at_registration(shapes: Any) -> None:
    _, _, metas = shapes
    assert {n: m.task for n, m in metas.items()} == {
        "multi": "tabular-regression",
        "tags": "tabular-multilabel",
        "ridge": "tabular-classification",
        "binary": "tabular-classification",
        "outliers": "anomaly-detection",
        "clusters": "clustering",
    }
    assert metas["multi"].n_outputs == 2
    assert metas["tags"].n_outputs == 3
    assert metas["ridge"].score_method == "decision_function"
    assert metas["outliers"].score_method == "score_samples"


def test_multi_output_regression_answers_a_list_of_values(shapes: Any) -> None:
    client, fitted, _ = shapes
    expected = fitted["multi"].predict(np.asarray(ROWS)).tolist()
    answers = _batch(client, "multi")
    assert [a["prediction"] for a in answers] == expected
    assert all(a["confidence"] is None and a["probabilities"] is None for a in answers)
    v2 = _v2(client, "multi")["prediction"]
    assert v2["shape"] == [len(ROWS), 2]
    assert v2["data"] == [v for row in expected for v in row]


def test_multilabel_answers_the_outputs_that_are_on(shapes: Any) -> None:
    client, fitted, _ = shapes
    indicator = fitted["tags"].predict(np.asarray(ROWS))
    answers = _batch(client, "tags")
    assert [a["prediction"] for a in answers] == [
        [j for j, v in enumerate(row) if v] for row in indicator.tolist()
    ]
    on = [np.asarray(p)[:, 1] for p in fitted["tags"].predict_proba(np.asarray(ROWS))]
    for i, answer in enumerate(answers):
        assert answer["probabilities"] == {str(j): float(on[j][i]) for j in range(3)}
    v2 = _v2(client, "tags")["label"]
    assert v2["shape"] == [len(ROWS), 3]
    assert v2["data"] == indicator.ravel().tolist()


def test_classifiers_without_probabilities_answer_decision_scores(shapes: Any) -> None:
    client, fitted, _ = shapes
    x = np.asarray(ROWS)
    ridge = fitted["ridge"]
    answers = _batch(client, "ridge")
    assert [a["prediction"] for a in answers] == ridge.predict(x).tolist()
    keys = [str(c) for c in ridge.classes_]
    assert [a["scores"] for a in answers] == [
        dict(zip(keys, row, strict=True)) for row in ridge.decision_function(x).tolist()
    ]
    assert all(a["probabilities"] is None for a in answers)

    binary = fitted["binary"]
    answers = _batch(client, "binary")
    positive = str(binary.classes_[1])
    assert [a["scores"] for a in answers] == [
        {positive: v} for v in binary.decision_function(x).tolist()
    ]
    scores = _v2(client, "ridge")["scores"]
    assert scores["shape"] == [len(ROWS), 3]


def test_anomaly_detectors_answer_label_and_score_samples(shapes: Any) -> None:
    client, fitted, _ = shapes
    forest = fitted["outliers"]
    rows = [*ROWS, [30.0, -4.0, 25.0, 9.0]]  # far from everything: an outlier
    x = np.asarray(rows)
    answers = _batch(client, "outliers", rows)
    assert [a["prediction"] for a in answers] == forest.predict(x).tolist()
    assert answers[-1]["prediction"] == -1
    assert [a["scores"] for a in answers] == [
        {"score_samples": v} for v in forest.score_samples(x).tolist()
    ]


def test_clusterers_answer_the_cluster_id(shapes: Any) -> None:
    client, fitted, _ = shapes
    answers = _batch(client, "clusters")
    assert [a["prediction"] for a in answers] == fitted["clusters"].predict(
        np.asarray(ROWS)
    ).tolist()
    single = client.post("/api/predict", json={"features": ROWS[0], "model": "clusters"})
    assert single.status_code == 200, single.text
    assert single.json()["prediction"] == answers[0]["prediction"]
    assert single.json()["scores"] is None


def test_outputs_without_a_class_list_add_no_metric_series(shapes: Any) -> None:
    from support.metrics import scrape

    client, _, _ = shapes
    for name in ("multi", "tags", "clusters"):
        _batch(client, name)
    series = scrape(client).get("mlserve_predictions_total", [])
    for name in ("multi", "tags", "clusters"):
        mine = [s for s in series if s.labels.get("model") == name]
        assert [s.labels["predicted_class"] for s in mine] == [""], mine
    anomaly = {s.labels["predicted_class"] for s in series if s.labels.get("model") == "outliers"}
    assert anomaly <= {"-1", "1"}
