"""Metrics of a real `mlserve serve --workers 2`: every worker's figures are in one scrape."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.metrics import value
from support.servers import MlserveProcess
from support.wait import wait_for

from mlserve.registry import Registry

from .slow_models import FileGatedRegressor, calls

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # generous: the machine running the suite may be busy
SENT = 6
HOLD_FROM = 10.0  # rows with x0 at least this wait in the model while gate/hold exists


def test_queue_depth_of_every_worker_is_exported_with_two_workers(
    start_server: Callable[..., MlserveProcess], tmp_path: Path
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
    server = start_server(registry.root, args=["--workers", "2"])
    server.wait_ready()

    def depth() -> float:
        return value(server.metrics(), "mlserve_queue_depth", model="paced", version="1")

    assert "mlserve_queue_depth" in server.metrics()
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
            wait_for(
                lambda: in_model() > 0 and depth() + in_model() == SENT, "queued requests", WAIT_S
            )
            queued, held = depth(), in_model()
            (gate / "hold").unlink()
            statuses = [f.result(WAIT_S) for f in sent]
    finally:
        (gate / "hold").unlink(missing_ok=True)

    assert queued == SENT - held > 0
    assert statuses == [200] * SENT
    wait_for(lambda: depth() == 0, "an empty queue", WAIT_S)
    assert server.terminate() == 0
    assert "Traceback" not in server.output()
