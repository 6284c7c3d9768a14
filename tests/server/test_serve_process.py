"""The real `mlserve serve` process: starts, answers over HTTP, and stops cleanly on SIGTERM.
(With --workers 2: test_serve_workers.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES
from support.net import free_port
from support.servers import MlserveProcess

from mlserve.registry import Registry

from .slow_models import FileGatedRegressor, calls

pytestmark = pytest.mark.slow

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture
def iris_registry(tmp_path: Path, iris_estimator: Any) -> Path:
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    return registry.root


def test_serve_answers_predictions_over_http_and_exits_0_on_sigterm(
    start_server: Callable[..., MlserveProcess], iris_registry: Path, iris_estimator: Any
) -> None:
    server = start_server(iris_registry, log_level=None)
    server.wait_ready()

    with httpx.Client(base_url=server.url, timeout=10) as http:
        one = http.post("/api/predict", json={"features": FLOWERS[0]})
        many = http.post("/api/predict/batch", json={"records": FLOWERS})
        health = http.get("/api/health")

    assert one.status_code == 200, one.text
    assert one.json()["prediction"] == iris_estimator.predict(FLOWERS[:1])[0]
    assert one.json()["model"] == "iris"
    assert [p["prediction"] for p in many.json()["predictions"]] == list(
        iris_estimator.predict(FLOWERS)
    )
    assert health.json()["status"] == "healthy"
    assert server.terminate() == 0
    output = server.output()
    assert f"{server.url}/docs" in output  # says where the docs are
    assert "training" not in output  # a registry with models is served as is
    assert "Traceback" not in output


def test_serve_on_an_empty_registry_trains_the_sample_and_says_so(
    start_server: Callable[..., MlserveProcess], tmp_path: Path
) -> None:
    server = start_server(tmp_path / "empty", sample=True, log_level=None)
    server.wait_ready()

    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.post("/api/predict", json={"text": "The staff were lovely and helpful"})
        models = http.get("/api/models").json()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "sentiment"
    assert body["confidence"] == max(body["probabilities"].values())
    assert [m["name"] for m in models["models"]] == ["sentiment"]
    assert server.terminate() == 0
    assert "training the bundled sentiment sample" in server.output()
    info = Registry(tmp_path / "empty").metadata("sentiment", 1)
    assert 0.5 < info.metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_with_a_file_as_registry_exits_2_with_one_line(tmp_path: Path, how: str) -> None:
    not_a_dir = tmp_path / "registry.txt"
    not_a_dir.write_text("not a registry")
    args = ["--registry", str(not_a_dir)] if how == "flag" else []
    env = dict(os.environ)
    if how == "env":
        env["MLSERVE_REGISTRY__PATH"] = str(not_a_dir)

    result = subprocess.run(
        [sys.executable, "-m", "mlserve", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("error: ")
    assert str(not_a_dir) in message and "not a directory" in message


def test_serve_with_invalid_settings_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlserve", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr


GRACE_S = 10.0  # the server's graceful timeout in the draining test
HELD_X0 = 100.0  # FileGatedRegressor holds a prediction with x0 at or above this


def test_sigterm_drains_readiness_finishes_the_request_in_flight_and_exits_0(
    start_server: Callable[..., MlserveProcess], tmp_path: Path
) -> None:
    # GatedClassifier (broken_models) waits on an in-process Event, out of reach of a server
    # process; FileGatedRegressor waits on a file this test removes.
    gate = tmp_path / "gate"
    gate.mkdir()
    registry = Registry(tmp_path / "gated")
    held_model = FileGatedRegressor(gate_dir=str(gate), hold_from=HELD_X0)
    registry.register_estimator(
        held_model.fit([[0.0, 0.0]], [0.0]), name="gated", aliases=["production"]
    )
    (gate / "hold").touch()
    env = {"MLSERVE_SERVER__GRACEFUL_TIMEOUT": str(GRACE_S)}
    server = start_server(registry.root, env=env, log_level=None)
    server.wait_ready()

    with (
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=server.url, timeout=5) as probe,
    ):
        held = pool.submit(
            httpx.post, f"{server.url}/api/predict", json={"features": [HELD_X0, 1.0]}, timeout=60
        )
        deadline = time.monotonic() + 30
        while not any(x0 >= HELD_X0 for _, x0, _ in calls(gate)):
            assert not held.done(), held.result()
            assert time.monotonic() < deadline, f"prediction never started:\n{server.output()}"
            time.sleep(0.01)  # polling interval of a bounded wait
        before = probe.get("/api/ready").status_code  # also opens the probe's connection

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Until uvicorn closes its listener (within ~0.1 s) a probe is answered, and then it
        # must say 503; afterwards connections are refused. Never 200 once SIGTERM was sent.
        probes: list[int | str] = []
        while time.monotonic() < signalled + 0.5:
            try:
                probes.append(probe.get("/api/ready").status_code)
            except httpx.TransportError as exc:
                probes.append(type(exc).__name__)
            time.sleep(0.01)  # probing interval
        still_held = not held.done()
        still_running = server.process.poll() is None

        (gate / "hold").unlink()  # let the prediction finish
        response = held.result(timeout=GRACE_S)
        try:
            code = server.process.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {GRACE_S} s:\n{server.output()}") from None
        stopped_after = time.monotonic() - signalled

    assert before == 200
    answered = [p for p in probes if isinstance(p, int)]
    assert 200 not in answered, probes
    assert set(answered) <= {503}, probes
    assert still_held and still_running  # the shutdown waited for the request in flight
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == 2 * HELD_X0 + 1.0
    assert code == 0, server.output()
    assert stopped_after < GRACE_S
    output = server.output()
    assert "received SIGTERM: draining" in output
    assert "timeout graceful shutdown exceeded" not in output
    assert "Traceback" not in output
