"""The real `mlserve serve` process: starts, answers over HTTP, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlserve.registry import Registry

from .conftest import IRIS_FEATURES
from .slow_models import FileGatedRegressor, calls

pytestmark = pytest.mark.slow

STARTUP_S = 90.0  # generous: the machine running the suite may be busy
STOP_S = 15.0
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A `python -m mlserve serve` process; its stderr goes to a file (no pipe to fill)."""

    def __init__(
        self, args: list[str], cwd: Path, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"serve-{port}.log"
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | (env or {})
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlserve", "serve", "--port", str(port), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/api/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval of a bounded wait, not a wait for state
        raise AssertionError(f"not ready within {STARTUP_S} s:\n{self.output()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"no exit within {STOP_S} s of SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def launch(*args: str | Path) -> Server:
        server = Server([str(a) for a in args], tmp_path, free_port())
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.kill()


@pytest.fixture
def iris_registry(tmp_path: Path, iris_estimator: Any) -> Path:
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    return registry.root


def test_serve_answers_predictions_over_http_and_exits_0_on_sigterm(
    start: Callable[..., Server], iris_registry: Path, iris_estimator: Any
) -> None:
    server = start("--registry", iris_registry, "--no-sample")
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
    start: Callable[..., Server], tmp_path: Path
) -> None:
    server = start("--registry", tmp_path / "empty")
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


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_serve_with_two_workers_answers_and_exits_0_on_sigterm(
    start: Callable[..., Server], iris_registry: Path, iris_estimator: Any
) -> None:
    server = start("--registry", iris_registry, "--workers", "2", "--no-sample")
    server.wait_ready()
    sent = 12

    answers = []
    for _ in range(sent):
        # a new connection each time, so the kernel spreads them over both workers
        response = httpx.post(f"{server.url}/api/predict", json={"features": FLOWERS[1]})
        assert response.status_code == 200, response.text
        answers.append(response.json()["prediction"])
    metrics = httpx.get(f"{server.url}/metrics").text

    assert set(answers) == {iris_estimator.predict(FLOWERS[1:2])[0]}
    # every worker's predictions are in one scrape, whichever worker answers it
    assert _metric(metrics, "mlserve_predictions_total", model="iris") == sent
    assert server.terminate() == 0
    assert "Traceback" not in server.output()


GRACE_S = 10.0  # the server's graceful timeout in the draining test
HELD_X0 = 100.0  # FileGatedRegressor holds a prediction with x0 at or above this


def _importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server unpickles a test-only estimator: let it import this package's modules."""
    module = sys.modules[FileGatedRegressor.__module__]
    tests_root = Path(str(module.__file__)).parents[len(module.__name__.split(".")) - 1]
    path = [str(tests_root), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))


def test_sigterm_drains_readiness_finishes_the_request_in_flight_and_exits_0(
    start: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    _importable_tests(monkeypatch)
    monkeypatch.setenv("MLSERVE_SERVER__GRACEFUL_TIMEOUT", str(GRACE_S))
    server = start("--registry", registry.root, "--no-sample")
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
