"""Error bodies (and the model errors that /api/models and /api/health report) never carry a
file path, a traceback or what a model's exception said: driven through every failure path —
a tampered artifact, one whose unpickling raises with internals, a model whose predictions do,
corrupt registry files, failing async jobs, unknown models and versions."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, populate, tamper

from mlserve.config import load_settings
from mlserve.registry import Registry
from mlserve.server.app import create_app

from .hostile_models import (
    SECRET_PATH,
    SECRET_TOKEN,
    FailingClassifier,
    UnloadableClassifier,
    fitted,
)

FLOWER = [5.1, 3.5, 1.4, 0.2]
TENSOR = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": FLOWER}]}


@pytest.fixture
def hostile(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[TestClient, Path]]:
    """A server over good models and every kind of bad one."""
    root = tmp_path / "registry"
    populate(root)
    registry = Registry(root)
    # Bad on purpose: registered as --no-check would (the smoke check refuses them).
    add = functools.partial(registry.register_estimator, check=False)
    add(fitted(UnloadableClassifier), name="unloadable", feature_names=IRIS_FEATURES)
    add(fitted(FailingClassifier), name="failing", feature_names=IRIS_FEATURES)
    tamper(registry, add(fitted(UnloadableClassifier), name="tampered"))
    corrupt = add(fitted(FailingClassifier), name="corrupt", feature_names=IRIS_FEATURES)
    (root / "corrupt" / "versions" / str(corrupt.version) / "metadata.json").write_text("{broken")
    settings = load_settings(
        None,
        home=str(tmp_path / "home"),
        registry={"path": str(root)},
        traffic={"watch_interval_s": 0, "failure_threshold": 1000},
        jobs={"chunk_size": 2},
        server={"model_control": "explicit"},  # the V2 repository's load is a failure path too
    )
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, tmp_path


def assert_clean(text: str, tmp_path: Path) -> None:
    for leak in (str(tmp_path), SECRET_PATH, SECRET_TOKEN, "Traceback", 'File "', "model.joblib"):
        assert leak not in text, f"{leak!r} in {text[:600]}"


def wait_for_job(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if status["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.02)  # polling interval of a bounded wait


def test_no_error_body_names_a_file_or_what_a_model_raised(
    hostile: tuple[TestClient, Path], caplog: pytest.LogCaptureFixture
) -> None:
    client, tmp_path = hostile
    answers = []

    def post(path: str, body: Any = None) -> Any:
        answers.append(response := client.post(path, json=body))
        return response

    def get(path: str) -> Any:
        answers.append(response := client.get(path))
        return response

    for model in ("unloadable", "tampered", "corrupt"):
        assert post("/api/predict", {"features": FLOWER, "model": model}).status_code == 503
        assert post(f"/api/models/{model}/reload").status_code == 500
        assert post(f"/v2/models/{model}/infer", TENSOR).status_code == 503
        assert post(f"/v2/repository/models/{model}/load").status_code == 503
    assert get("/api/models/corrupt").status_code == 500
    assert get("/v2/models/corrupt").status_code == 500
    assert post("/api/predict", {"features": FLOWER, "model": "failing"}).status_code == 500
    assert post("/api/predict/batch", {"records": [FLOWER], "model": "failing"}).status_code == 500
    assert post("/v2/models/failing/infer", TENSOR).status_code == 500
    for path in (
        "/api/models/nope",
        "/api/models/iris/versions/99",
        "/v2/models/nope",
        "/v2/models/iris/versions/99",
        "/api/jobs/nope",
        "/no/such/route",
    ):
        assert get(path).status_code == 404, path
    for path in ("/api/models", "/api/health", "/api/health/detailed", "/v2/repository/index"):
        (post if path.startswith("/v2") else get)(path)

    job = post("/api/predict/async", {"records": [FLOWER] * 3, "model": "failing"})
    assert job.status_code == 202, job.text
    status = wait_for_job(client, job.json()["job_id"])
    assert status["status"] == "failed" and status["error"], status

    for response in answers:
        assert_clean(response.text, tmp_path)
    assert_clean(str(status), tmp_path)
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["unloadable"]["error"] and listed["tampered"]["error"]
    assert "RuntimeError" in listed["unloadable"]["error"]  # what failed, not what it said
    # The operator's log keeps the details the clients never see.
    assert SECRET_PATH in caplog.text and str(tmp_path) in caplog.text
