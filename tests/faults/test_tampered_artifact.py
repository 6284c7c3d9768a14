"""An artifact changed on disk after registration, with a real server: a reload refuses it (the
old version keeps serving), and a server started over it leaves that model out, serves the
others and reports degraded health, with errors that name no file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.data import IRIS_FEATURES, iris_estimator, populate, tamper
from support.servers import running

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

FLOWER = [5.1, 3.5, 1.4, 0.2]


def no_paths(text: str, *roots: Path) -> None:
    for root in roots:
        assert str(root) not in text, text
    assert "model.joblib" not in text and "Traceback" not in text, text


def test_a_tampered_artifact_is_refused_and_the_other_models_serve(tmp_path: Path) -> None:
    root, home = tmp_path / "registry", tmp_path / "home"
    populate(root)
    registry = Registry(root)
    config = {"traffic": {"watch_interval_s": 0}}
    with running(root, home, config=config) as server, httpx.Client(base_url=server.url) as http:
        v2 = registry.register_estimator(
            iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
        )
        tamper(registry, v2)
        refused = http.post("/api/models/iris/reload")
        assert refused.status_code == 500, refused.text
        error = refused.json()["error"]
        assert error["code"] == "integrity_error"
        assert "sha256" in error["message"] and "iris:2" in error["message"]
        no_paths(refused.text, root, home)
        answer = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
        assert answer.status_code == 200 and answer.json()["version"] == 1
        assert http.get("/api/health").json()["status"] == "healthy"

    # A fresh start over the tampered production version: iris is left out, the rest serves.
    with running(root, home, config=config) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/api/ready").status_code == 200
        health = http.get("/api/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "degraded"
        models = {m["name"]: m for m in health.json()["models"]}
        assert models["iris"]["status"] == "degraded" and models["sentiment"]["status"] == "healthy"
        assert "sha256" in models["iris"]["error"]
        listed = {m["name"]: m for m in http.get("/api/models").json()["models"]}
        assert listed["iris"]["status"] == "failed"
        down = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
        assert down.status_code == 503 and down.json()["error"]["code"] == "model_unavailable"
        up = http.post("/api/predict", json={"text": "great lovely", "model": "sentiment"})
        assert up.status_code == 200, up.text
        old = http.post("/api/predict", json={"features": FLOWER, "model": "iris:1"})
        assert old.status_code == 200 and old.json()["version"] == 1  # v1 is untouched
        for text in (health.text, down.text, http.get("/api/models").text):
            no_paths(text, root, home)
        log = server.output()
    # The operator's log names the refused file.
    assert str(registry.artifact_path(v2)) in log and "sha256" in log
