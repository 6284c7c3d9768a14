"""Real `mlserve serve` processes for command tests: a registry of tiny models, a free port,
readiness polled with a deadline, SIGTERM at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TEXTS = {
    "pos": ["good great fine", "lovely good", "great", "excellent lovely service", "happy great"],
    "neg": ["awful bad", "terrible awful", "bad", "horrible rude staff", "angry awful"],
}
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_estimator() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = [t for ts in TEXTS.values() for t in ts]
    labels = [label for label, ts in TEXTS.items() for _ in ts]
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(
        texts, labels
    )


def iris_estimator() -> Any:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    return LogisticRegression(max_iter=1000).fit(data.data, data.target_names[data.target])


def populate(root: Path) -> dict[str, ModelMetadata]:
    """sentiment (text, pos/neg) and iris (four named features), both @production."""
    registry = Registry(root)
    return {
        "sentiment": registry.register_estimator(
            text_estimator(), name="sentiment", aliases=["production"]
        ),
        "iris": registry.register_estimator(
            iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
        ),
    }


def tamper(registry: Registry, meta: ModelMetadata) -> None:
    """Flip bytes in the middle of an artifact: same size, another sha256, so it fails to load."""
    path = registry.artifact_path(meta)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def clean_env(home: Path) -> dict[str, str]:
    """The test process's environment without any MLSERVE_* setting, with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVE_")}
    env["MLSERVE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    url: str
    port: int
    registry: Path
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10)


def launch(
    registry: Path, log: Path, *, port: int | None = None, home: Path | None = None
) -> Server:
    """Start `python -m mlserve serve` in the background (not waiting for it)."""
    port = port or free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlserve",
                "serve",
                "--port",
                str(port),
                "--registry",
                str(registry),
                "--no-sample",
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(home or log.parent / "home"),
        )
    return Server(f"http://127.0.0.1:{port}", port, registry, process, log)


def wait_ready(server: Server, timeout: float = START_TIMEOUT_S) -> None:
    """Poll /api/ready until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mlserve serve exited early:\n{server.log_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/api/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.05)  # a poll interval, not a wait for state
    raise RuntimeError(f"mlserve serve not ready after {timeout:.0f} s:\n{server.log_text()}")


def stop(server: Server) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it hangs."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextlib.contextmanager
def serving(registry: Path, log: Path, **kwargs: Any) -> Iterator[Server]:
    """A started, ready server for the duration of the block."""
    server = launch(registry, log, **kwargs)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
