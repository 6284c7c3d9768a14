"""A real `mlserve serve --workers 2`: both workers answer and one scrape counts them all
(predictions, queue depth, cache entries), whichever worker answers it; files a previous run
left in a PROMETHEUS_MULTIPROC_DIR of one's own are removed at start; SIGTERM stops it with
exit 0. One server for the module (two worker processes take seconds to start): each test
counts differences from what it found."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.data import IRIS_FEATURES, iris_estimator
from support.metrics import Samples, value
from support.servers import MlserveProcess, serve
from support.wait import wait_for

from mlserve.registry import Registry

from .slow_models import FileGatedRegressor, calls

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # generous: the machine running the suite may be busy
HOLD_FROM = 10.0  # `paced` holds rows with x0 at least this while gate/hold exists
STALE = """
from prometheus_client import Counter
c = Counter("mlserve_predictions", "stale", ["model", "version", "predicted_class"])
c.labels("iris", "1", "setosa").inc(1000)
"""


@dataclass
class TwoWorkers:
    server: MlserveProcess
    at_start: Samples  # the first scrape, before any request
    iris: Any  # the estimator served as iris@production
    gate: Path  # paced's gate folder


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWorkers]:
    """`mlserve serve --workers 2` over iris (cache on) and paced (FileGatedRegressor), its
    metrics folder holding a previous run's 1,000 predictions; SIGTERM at the end: exit 0."""
    root = tmp_path_factory.mktemp("two-workers")
    metrics_dir = root / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", STALE], env={**os.environ, **env}, check=True)
    assert list(metrics_dir.glob("*.db"))  # a previous run's counts
    gate = root / "gate"
    gate.mkdir()
    registry = Registry(root / "registry")
    iris = iris_estimator()
    registry.register_estimator(
        iris, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate), hold_from=HOLD_FROM).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    server = serve(
        registry.root,
        root / "home",
        args=["--workers", "2"],
        env={**env, "MLSERVE_CACHE__ENABLED": "true"},
    )
    try:
        server.wait_ready()
        yield TwoWorkers(server, server.metrics(), iris, gate)
    finally:
        (gate / "hold").unlink(missing_ok=True)
        code = server.terminate()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()


def post_on_new_connections(server: MlserveProcess, bodies: list[Any]) -> list[httpx.Response]:
    # A new connection each time, so the kernel spreads them over both workers.
    return [httpx.post(f"{server.url}/api/predict", json=body, timeout=10) for body in bodies]


def test_a_previous_runs_metrics_files_are_removed_at_start(two_workers: TwoWorkers) -> None:
    assert value(two_workers.at_start, "mlserve_predictions_total", model="iris") == 0


def test_every_workers_predictions_are_counted_in_one_scrape(two_workers: TwoWorkers) -> None:
    server, flower, sent = two_workers.server, [6.7, 3.0, 5.2, 2.3], 12
    before = value(server.metrics(), "mlserve_predictions_total", model="iris")

    answers = post_on_new_connections(server, [{"features": flower, "model": "iris"}] * sent)
    after = value(server.metrics(), "mlserve_predictions_total", model="iris")

    assert [a.status_code for a in answers] == [200] * sent
    assert {a.json()["prediction"] for a in answers} == set(two_workers.iris.predict([flower]))
    assert after - before == sent  # whichever worker answered the scrape


def test_cache_entries_of_every_worker_are_exported(two_workers: TwoWorkers) -> None:
    server = two_workers.server
    before = value(server.metrics(), "mlserve_cache_entries")
    # Ten inputs no other test sends, each cached by the worker that answered it.
    rows = [{"features": [5.0 + i / 10, 3.45, 1.4, 0.2], "model": "iris"} for i in range(10)]

    answers = post_on_new_connections(server, rows)

    assert [a.status_code for a in answers] == [200] * len(rows)
    assert value(server.metrics(), "mlserve_cache_entries") - before == len(rows)


def test_queue_depth_of_every_worker_is_exported(two_workers: TwoWorkers) -> None:
    server, gate, sent = two_workers.server, two_workers.gate, 6

    def depth() -> float:
        return value(server.metrics(), "mlserve_queue_depth", model="paced", version="1")

    def in_model() -> int:
        return sum(rows for _, x0, rows in calls(gate) if x0 >= HOLD_FROM)

    def predict(i: int) -> int:
        # A new connection each time; inputs differ, so no answer comes from the cache.
        body = {"features": [HOLD_FROM + 1, 0.5 + i], "model": "paced"}
        return httpx.post(f"{server.url}/api/predict", json=body, timeout=WAIT_S).status_code

    assert "mlserve_queue_depth" in server.metrics()
    assert depth() == 0
    (gate / "hold").touch()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=sent) as pool:
            futures = [pool.submit(predict, i) for i in range(sent)]
            # Each worker holds one call in the model; every other request waits in a queue.
            wait_for(
                lambda: in_model() > 0 and depth() + in_model() == sent, "queued requests", WAIT_S
            )
            queued, held = depth(), in_model()
            (gate / "hold").unlink()
            statuses = [f.result(WAIT_S) for f in futures]
    finally:
        (gate / "hold").unlink(missing_ok=True)

    assert queued == sent - held > 0
    assert statuses == [200] * sent
    wait_for(lambda: depth() == 0, "an empty queue", WAIT_S)
