"""Overload against a real server: a model's queue holds `batching.max_queue` requests; beyond
it requests are shed at once with 503 and Retry-After (on /api/predict, the batch route and
V2 inference alike), other models' queues are not affected, and the queued requests are
answered once the model frees up. (The batcher's own bound: tests/runtime/test_batcher.py,
tests/server/test_errors.py; the 10x-rate figures: bench/overload.py.)"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server.slow_models import FileGatedRegressor, calls
from support.data import populate
from support.servers import running

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

MAX_QUEUE = 4
CLIENTS = 19
HELD = [100.0, 1.0, 1.0, 1.0]  # x0 >= hold_from: the model waits while gate/hold exists
FLOWER = [5.1, 3.5, 1.4, 0.2]
FAST_S = 2.0  # generous for a busy machine; a queued request would wait for the gate


def wait_until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.01)  # polling interval of a bounded wait


def test_a_full_queue_sheds_at_once_and_other_models_still_answer(tmp_path: Path) -> None:
    root, gate = tmp_path / "registry", tmp_path / "gate"
    gate.mkdir()
    populate(root)
    x = np.random.default_rng(0).normal(size=(20, 4))
    Registry(root).register_estimator(
        FileGatedRegressor(gate_dir=str(gate), hold_from=50.0).fit(x, x[:, 0]),
        name="slow",
        aliases=["production"],
    )
    config = {"batching": {"max_queue": MAX_QUEUE}, "traffic": {"watch_interval_s": 0}}
    with (
        running(root, tmp_path / "home", config=config) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
        concurrent.futures.ThreadPoolExecutor(CLIENTS + 1) as pool,
    ):

        def predict() -> tuple[int, float, dict[str, str]]:
            started = time.perf_counter()
            with httpx.Client(base_url=server.url, timeout=60) as own:
                response = own.post("/api/predict", json={"features": HELD, "model": "slow"})
            return response.status_code, time.perf_counter() - started, dict(response.headers)

        (gate / "hold").write_text("")
        first = pool.submit(predict)
        wait_until(lambda: any(x0 >= 50 for _, x0, _ in calls(gate)), "held model call")
        rest = [pool.submit(predict) for _ in range(CLIENTS - 1)]
        shed_count = CLIENTS - 1 - MAX_QUEUE
        wait_until(lambda: sum(f.done() for f in rest) >= shed_count, "shed requests")
        shed = [f.result() for f in rest if f.done()]
        assert [status for status, _, _ in shed] == [503] * shed_count
        assert all(seconds < FAST_S for _, seconds, _ in shed), shed
        assert all(int(headers["retry-after"]) >= 1 for _, _, headers in shed)

        # Every route to the full model sheds; other models are answered as usual.
        for path, body in (
            ("/api/predict/batch", {"records": [HELD], "model": "slow"}),
            ("/v2/models/slow/infer",
             {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": HELD}]}),
        ):  # fmt: skip
            started = time.perf_counter()
            response = http.post(path, json=body)
            assert response.status_code == 503, response.text
            assert time.perf_counter() - started < FAST_S
            assert int(response.headers["retry-after"]) >= 1
        batch = http.post("/api/predict/batch", json={"records": [HELD], "model": "slow"})
        assert batch.json()["error"]["code"] == "overloaded"
        iris = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
        assert iris.status_code == 200, iris.text
        assert not first.done() and sum(not f.done() for f in rest) == MAX_QUEUE

        (gate / "hold").unlink()  # the queued requests are answered, none was lost
        outcomes = [first.result(60), *(f.result(60) for f in rest)]
        statuses = sorted(status for status, _, _ in outcomes)
        assert statuses == [200] * (1 + MAX_QUEUE) + [503] * shed_count, statuses
        # Recovered: the next request is answered at once.
        started = time.perf_counter()
        assert (
            http.post("/api/predict", json={"features": HELD, "model": "slow"}).status_code == 200
        )
        assert time.perf_counter() - started < FAST_S
