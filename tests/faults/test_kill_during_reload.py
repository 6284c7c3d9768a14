"""SIGKILL a real server in the middle of a model reload (its new version held mid-unpickling),
then restart it: the registry is intact and consistent, and the server serves the new version.

(SIGKILL during registration: tests/test_registry.py; during async jobs:
tests/server/test_jobs_processes.py.)"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES, populate
from support.servers import running, serve

from mlserve.registry import Registry

from .gated_models import slow_loading

pytestmark = pytest.mark.slow

FLOWER = [6.7, 3.0, 5.2, 2.3]
WAIT_S = 60.0


def wait_for(predicate: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)  # polling interval of a bounded wait


def assert_consistent(root: Path) -> None:
    """Every version has its metadata and an artifact matching its sha256 and size; aliases
    point at existing versions; no staging folder or temp file is left behind."""
    registry = Registry(root)
    for name in registry.names():
        versions = registry.versions(name)
        for version in versions:
            meta = registry.metadata(name, version)
            data = registry.artifact_path(meta).read_bytes()
            assert len(data) == meta.size_bytes
            assert hashlib.sha256(data).hexdigest() == meta.sha256
        assert set(registry.aliases(name).values()) <= set(versions)
    staging = root / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert not list(root.rglob("*.tmp"))


def test_sigkill_mid_reload_leaves_the_registry_intact_and_the_restart_serves(
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_iris

    root, home, gate = tmp_path / "registry", tmp_path / "home", tmp_path / "gate"
    gate.mkdir()
    populate(root)  # sentiment:1 and iris:1, both @production
    data = load_iris()
    server = serve(root, home, config={"traffic": {"watch_interval_s": 0}})
    try:
        server.wait_ready()
        (gate / "hold").write_text("")
        registry = Registry(root)
        registry.register_estimator(
            slow_loading(data.data, data.target_names[data.target], gate),
            name="iris",
            aliases=["production"],
            feature_names=IRIS_FEATURES,
        )

        reloads: list[Any] = []

        def reload() -> None:
            try:
                reloads.append(httpx.post(server.url + "/api/models/iris/reload", timeout=WAIT_S))
            except httpx.TransportError as exc:
                reloads.append(exc)

        caller = threading.Thread(target=reload)
        caller.start()
        marker = gate / f"loading-{server.process.pid}"
        wait_for(marker.exists, "reload in progress")
        # Loading runs off the event loop: while it is held, the old version serves.
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/api/live").status_code == 200
            answer = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
            assert answer.status_code == 200 and answer.json()["version"] == 1
        server.process.kill()
        server.process.wait(timeout=10)
        caller.join(timeout=WAIT_S)
        assert reloads and isinstance(reloads[0], httpx.TransportError), reloads
    finally:
        server.kill()

    assert_consistent(root)
    assert registry.versions("iris") == [1, 2]
    assert registry.aliases("iris") == {"production": 2}

    (gate / "hold").unlink()
    with running(root, home) as restarted, httpx.Client(base_url=restarted.url) as http:
        answer = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 2
        text = http.post("/api/predict", json={"text": "lovely good", "model": "sentiment"})
        assert text.status_code == 200, text.text
        assert http.get("/api/health").json()["status"] == "healthy"
    assert_consistent(root)
