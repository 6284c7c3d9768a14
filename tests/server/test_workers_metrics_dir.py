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


def test_stale_metrics_files_are_removed_at_start(tmp_path: Path, iris_estimator: Any) -> None:
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", STALE], env=env, check=True)
    assert list(metrics_dir.glob("*.db"))  # a previous run's counts, 1,000 predictions

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlserve", "serve", "--port", str(port), "--workers", "2",
             "--registry", str(registry.root), "--no-sample"],
            stdout=sink, stderr=subprocess.STDOUT, env={**env, "MLSERVE_HOME": str(tmp_path)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            time.sleep(0.05)  # polling interval of a bounded wait
        for _ in range(3):
            answer = httpx.post(f"{url}/api/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
            assert answer.status_code == 200, answer.text
        scraped = httpx.get(f"{url}/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, log.read_text()

    assert _predictions(scraped) == 3
