"""mlserve_predictions_total stays bounded: a series per class for classifiers, one for a
regressor however many distinct values it predicts."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support.metrics import matching, scrape

from mlserve.schemas import ModelMetadata

NAME = "mlserve_predictions_total"


def _series(client: TestClient, model: str) -> dict[str, float]:
    samples = scrape(client)
    return {
        s.labels["predicted_class"]: s.value
        for s in samples.get(NAME, [])
        if s.labels.get("model") == model
    }


def test_a_thousand_distinct_regression_predictions_add_no_series(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    rows = [
        {"sepal_length": 4.0 + i / 250, "sepal_width": 3.0, "petal_length": 1.0 + i / 400}
        for i in range(1000)
    ]
    predicted: set[float] = set()
    before = len(scrape(client).get(NAME, []))
    for start in range(0, len(rows), 100):
        response = client.post(
            "/api/predict/batch", json={"records": rows[start : start + 100], "model": "petal"}
        )
        assert response.status_code == 200, response.text
        predicted.update(p["prediction"] for p in response.json()["predictions"])
    assert len(predicted) == 1000  # every prediction a different value

    assert _series(client, "petal") == {"": 1000.0}  # one series, counting them all
    assert len(scrape(client).get(NAME, [])) == before + 1


def test_a_classifier_counts_each_predicted_class(
    client: TestClient, all_models: dict[str, ModelMetadata]
) -> None:
    texts = ["I love this product, it works great", "Terrible experience, I hate it"] * 3
    response = client.post("/api/predict/batch", json={"texts": texts, "model": "sentiment"})
    answers = [p["prediction"] for p in response.json()["predictions"]]

    series = _series(client, "sentiment")
    assert series == {label: float(answers.count(label)) for label in set(answers)}
    assert sum(matching(scrape(client), NAME, model="sentiment")) == len(texts)
