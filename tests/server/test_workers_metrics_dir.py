"""`mlserve serve --workers N` with a PROMETHEUS_MULTIPROC_DIR of one's own: files a previous run
left there are removed at start, so /metrics counts this run only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlserve.registry import Registry

from .conftest import IRIS_FEATURES

pytestmark = pytest.mark.slow

STALE = """
from prometheus_client import Counter
c = Counter("mlserve_predictions", "stale", ["model", "version", "predicted_class"])
c.labels("iris", "1", "setosa").inc(1000)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _predictions(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mlserve_predictions_total" and s.labels.get("model") == "iris"
    )


def _serve_two_workers(tmp_path: Path, iris_estimator: Any, env: dict[str, str]) -> Any:
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlserve", "serve", "--port", str(port), "--workers", "2",
             "--registry", str(registry.root), "--no-sample"],
            stdout=sink, stderr=subprocess.STDOUT, env={**env, "MLSERVE_HOME": str(tmp_path)},
        )  # fmt: skip
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    server.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/api/ready", timeout=2).status_code == 200:  # type: ignore[attr-defined]
                return server
        except httpx.TransportError:
            pass
        assert server.poll() is None, log.read_text()
        time.sleep(0.05)  # polling interval of a bounded wait
    raise AssertionError(f"not ready:\n{log.read_text()}")


def _stop(server: Any) -> None:
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0, server.log.read_text()


def test_stale_metrics_files_are_removed_at_start(tmp_path: Path, iris_estimator: Any) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", STALE], env=env, check=True)
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
        _stop(server)

    assert _predictions(scraped) == 3


def test_cache_entries_of_every_worker_are_exported(tmp_path: Path, iris_estimator: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    server = _serve_two_workers(tmp_path, iris_estimator, {**env, "MLSERVE_CACHE__ENABLED": "true"})
    try:
        for i in range(10):  # a new connection each: the kernel spreads them over the workers
            row = {"features": [5.0 + i / 10, 3.5, 1.4, 0.2]}
            assert httpx.post(f"{server.url}/api/predict", json=row).status_code == 200
        scraped = httpx.get(f"{server.url}/metrics").text
    finally:
        _stop(server)

    entries = sum(
        s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "mlserve_cache_entries"
    )
    assert entries == 10  # ten different inputs, each cached by the worker that answered it
