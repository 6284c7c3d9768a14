"""`mlserve serve --workers N` and its metrics folder: files a previous run left in a
PROMETHEUS_MULTIPROC_DIR of one's own are removed at start, so /metrics counts this run only;
and every worker's prediction cache is counted in one scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlserve.registry import Registry

from .conftest import IRIS_FEATURES
from .test_serve_process import Server, _metric, free_port

pytestmark = pytest.mark.slow

STALE = """
from prometheus_client import Counter
c = Counter("mlserve_predictions", "stale", ["model", "version", "predicted_class"])
c.labels("iris", "1", "setosa").inc(1000)
"""


def _serve_two_workers(tmp_path: Path, iris_estimator: Any, env: dict[str, str]) -> Server:
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    args = ["--workers", "2", "--registry", str(registry.root), "--no-sample"]
    server = Server(args, tmp_path, free_port(), env={**env, "MLSERVE_HOME": str(tmp_path)})
    server.wait_ready()
    return server


def test_stale_metrics_files_are_removed_at_start(tmp_path: Path, iris_estimator: Any) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", STALE], env={**os.environ, **env}, check=True)
    assert list(metrics_dir.glob("*.db"))  # a previous run's counts, 1,000 predictions

    server = _serve_two_workers(tmp_path, iris_estimator, env)
    try:
        for _ in range(3):
            answer = httpx.post(
                f"{server.url}/api/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
            )
            assert answer.status_code == 200, answer.text
        scraped = httpx.get(f"{server.url}/metrics").text
    finally:
        assert server.terminate() == 0, server.output()

    assert _metric(scraped, "mlserve_predictions_total", model="iris") == 3


def test_cache_entries_of_every_worker_are_exported(tmp_path: Path, iris_estimator: Any) -> None:
    server = _serve_two_workers(tmp_path, iris_estimator, {"MLSERVE_CACHE__ENABLED": "true"})
    try:
        for i in range(10):  # a new connection each: the kernel spreads them over the workers
            row = {"features": [5.0 + i / 10, 3.5, 1.4, 0.2]}
            assert httpx.post(f"{server.url}/api/predict", json=row).status_code == 200
        scraped = httpx.get(f"{server.url}/metrics").text
    finally:
        assert server.terminate() == 0, server.output()

    # ten different inputs, each cached by the worker that answered it
    assert _metric(scraped, "mlserve_cache_entries") == 10
