"""Metrics of a real `mlserve serve --workers 2`: every worker's figures are in one scrape."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlserve.registry import Registry

from .slow_models import FileGatedRegressor, calls
from .test_serve_process import Server, _metric, free_port

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # generous: the machine running the suite may be busy
SENT = 6
HOLD_FROM = 10.0  # rows with x0 at least this wait in the model while gate/hold exists


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Server]]:
    """start(*args): a `python -m mlserve serve` process, killed at the end if still running."""
    # The server unpickles a test-only estimator: it must import this package's modules.
    module = sys.modules[FileGatedRegressor.__module__]
    tests_root = Path(str(module.__file__)).parents[len(module.__name__.split(".")) - 1]
    path = [str(tests_root), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    servers: list[Server] = []

    def launch(*args: str | Path) -> Server:
        server = Server([str(a) for a in args], tmp_path, free_port())
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.kill()


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling interval of a bounded wait


def test_queue_depth_of_every_worker_is_exported_with_two_workers(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate), hold_from=HOLD_FROM).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    server = start("--registry", registry.root, "--workers", "2", "--no-sample")
    server.wait_ready()

    def scrape() -> str:
        return httpx.get(f"{server.url}/metrics", timeout=10).text

    def depth() -> float:
        return _metric(scrape(), "mlserve_queue_depth", model="paced", version="1")

    assert "mlserve_queue_depth" in scrape()
    assert depth() == 0
    (gate / "hold").touch()

    def in_model() -> int:
        return sum(rows for _, x0, rows in calls(gate) if x0 >= HOLD_FROM)

    def predict() -> int:
        # a new connection each time, so the kernel spreads them over both workers
        body = {"features": [HOLD_FROM + 1, 0.5]}
        return httpx.post(f"{server.url}/api/predict", json=body, timeout=WAIT_S).status_code

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=SENT) as pool:
            sent = [pool.submit(predict) for _ in range(SENT)]
            # Each worker holds one call in the model; every other request waits in a queue.
            _wait(lambda: in_model() > 0 and depth() + in_model() == SENT, "queued requests")
            queued, held = depth(), in_model()
            (gate / "hold").unlink()
            statuses = [f.result(WAIT_S) for f in sent]
    finally:
        (gate / "hold").unlink(missing_ok=True)

    assert queued == SENT - held > 0
    assert statuses == [200] * SENT
    _wait(lambda: depth() == 0, "an empty queue")
    assert server.terminate() == 0
    assert "Traceback" not in server.output()
