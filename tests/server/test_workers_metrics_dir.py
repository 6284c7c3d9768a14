"""`mlserve serve --workers N` and its metrics folder: files a previous run left in a
PROMETHEUS_MULTIPROC_DIR of one's own are removed at start, so /metrics counts this run only;
and every worker's prediction cache is counted in one scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES
from support.metrics import value
from support.servers import MlserveProcess

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

STALE = """
from prometheus_client import Counter
c = Counter("mlserve_predictions", "stale", ["model", "version", "predicted_class"])
c.labels("iris", "1", "setosa").inc(1000)
"""


@pytest.fixture
def two_workers(
    tmp_path: Path, iris_estimator: Any, start_server: Callable[..., MlserveProcess]
) -> Callable[..., MlserveProcess]:
    """two_workers(**env): a ready `mlserve serve --workers 2` over iris@production."""

    def start(**env: str) -> MlserveProcess:
        registry = Registry(tmp_path / "registry")
        registry.register_estimator(
            iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
        )
        server = start_server(registry.root, args=["--workers", "2"], env=env)
        server.wait_ready()
        return server

    return start


def test_stale_metrics_files_are_removed_at_start(
    tmp_path: Path, two_workers: Callable[..., MlserveProcess]
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", STALE], env={**os.environ, **env}, check=True)
    assert list(metrics_dir.glob("*.db"))  # a previous run's counts, 1,000 predictions

    server = two_workers(**env)
    try:
        for _ in range(3):
            answer = httpx.post(
                f"{server.url}/api/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
            )
            assert answer.status_code == 200, answer.text
        scraped = server.metrics()
    finally:
        assert server.terminate() == 0, server.output()

    assert value(scraped, "mlserve_predictions_total", model="iris") == 3


def test_cache_entries_of_every_worker_are_exported(
    two_workers: Callable[..., MlserveProcess],
) -> None:
    server = two_workers(MLSERVE_CACHE__ENABLED="true")
    try:
        for i in range(10):  # a new connection each: the kernel spreads them over the workers
            row = {"features": [5.0 + i / 10, 3.5, 1.4, 0.2]}
            assert httpx.post(f"{server.url}/api/predict", json=row).status_code == 200
        scraped = server.metrics()
    finally:
        assert server.terminate() == 0, server.output()

    # ten different inputs, each cached by the worker that answered it
    assert value(scraped, "mlserve_cache_entries") == 10
