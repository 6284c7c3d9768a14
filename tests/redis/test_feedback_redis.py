"""Feedback with redis.url: replicas share remembered predictions and labels; with Redis down,
predictions go on, feedback answers 503, and buffered predictions are written once it is back.
(The store's own behaviour is tested against Redis too, in tests/test_feedback_store.py.)"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

from mlserve.config import load_settings
from mlserve.server.app import create_app


def settings(registry: Path, home: Path, url: str, prefix: str) -> Any:
    return load_settings(
        None,
        home=str(home),
        registry={"path": str(registry)},
        redis={"url": url, "key_prefix": prefix, "health_check_interval_s": 0.2},
    )


@pytest.mark.redis
def test_a_label_sent_to_one_replica_counts_on_every_replica(
    text_registry: Path, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    with (
        TestClient(
            create_app(settings(text_registry, tmp_path / "a", redis_url, key_prefix))
        ) as replica_a,
        TestClient(
            create_app(settings(text_registry, tmp_path / "b", redis_url, key_prefix))
        ) as replica_b,
    ):
        answers = [
            replica_a.post("/api/predict", json={"text": text}).json()
            for text in ("great", "awful bad", "lovely", "terrible")
        ]
        flip = {"pos": "neg", "neg": "pos"}
        # Replica A's buffer is written on its next flush (feedback.flush_interval_s); a label
        # sent to B before that is unknown there, so A's quality request flushes it first.
        assert replica_a.get("/api/models/sentiment/quality").status_code == 200
        labels = [a["prediction"] for a in answers[:3]] + [flip[answers[3]["prediction"]]]
        result = replica_b.post(
            "/api/feedback",
            json={
                "items": [
                    {"request_id": a["request_id"], "label": label}
                    for a, label in zip(answers, labels, strict=True)
                ]
            },
        ).json()
        again = replica_a.post(
            "/api/feedback", json={"request_id": answers[0]["request_id"], "label": labels[0]}
        ).json()
        on_a = replica_a.get("/api/models/sentiment/quality").json()["versions"][0]
        on_b = replica_b.get("/api/models/sentiment/quality").json()["versions"][0]

    assert result["accepted"] == 4
    assert again["outcome"] == "replaced"
    assert on_a == on_b
    assert (on_a["predictions"], on_a["feedback"], on_a["rolling"]["accuracy"]) == (4, 4, 0.75)


def test_redis_down_feedback_is_503_and_predictions_go_on(
    text_registry: Path, tmp_path: Path, dead_redis_url: str
) -> None:
    config = settings(text_registry, tmp_path, dead_redis_url, "mlst-dead:")
    with TestClient(create_app(config)) as server:
        answer = server.post("/api/predict", json={"text": "great"})
        feedback = server.post(
            "/api/feedback", json={"request_id": answer.json()["request_id"], "label": "pos"}
        )
        quality = server.get("/api/models/sentiment/quality")

    assert answer.status_code == 200
    assert feedback.status_code == 503
    assert feedback.json()["error"]["code"] == "feedback_unavailable"
    assert quality.status_code == 503
