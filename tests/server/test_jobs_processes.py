"""Async jobs across real `mlserve serve` processes sharing one job store; SIGKILL mid-job."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess

from mlserve.registry import Registry

from .slow_models import FileGatedRegressor, calls

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # generous: the machine running the suite may be busy


@pytest.fixture
def launch(
    tmp_path: Path, start_server: Callable[..., MlserveProcess]
) -> Callable[..., MlserveProcess]:
    """launch(registry, **env): a ready `python -m mlserve serve`; MLSERVE_HOME is the test's,
    so every server launched here shares one job store."""

    def start(registry: Path, **env: str) -> MlserveProcess:
        server = start_server(registry, env=env, log_level=None)
        server.wait_ready()
        return server

    return start


def wait_for(http: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        response = http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job not there within {WAIT_S} s: {body}")
        time.sleep(0.02)  # polling interval of a bounded wait


def results(http: httpx.Client, job_id: str) -> list[Any]:
    lines = http.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})
    assert lines.status_code == 200, lines.text
    return [json.loads(line) for line in lines.text.splitlines()]


def test_a_job_accepted_by_one_process_is_read_and_run_by_another(
    launch: Callable[..., MlserveProcess],
    tmp_path: Path,
    iris_estimator: Any,
    iris: tuple[Any, Any],
) -> None:
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    x, _ = iris
    accepting = launch(registry.root, MLSERVE_JOBS__CONCURRENCY="0")  # never runs jobs
    working = launch(registry.root, MLSERVE_JOBS__CONCURRENCY="1", MLSERVE_JOBS__CHUNK_SIZE="20")

    with (
        httpx.Client(base_url=accepting.url, timeout=10) as a,
        httpx.Client(base_url=working.url, timeout=10) as b,
    ):
        submitted = a.post("/api/predict/async", json={"records": x.tolist()})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        seen_by_b = b.get(f"/api/jobs/{job_id}")  # at once, from the other process
        finished = wait_for(a, job_id, lambda j: j["status"] in ("completed", "failed"))
        from_a, from_b = results(a, job_id), results(b, job_id)

    assert seen_by_b.status_code == 200, seen_by_b.text
    assert seen_by_b.json()["progress"]["total"] == len(x)
    assert finished["status"] == "completed", finished
    assert from_a == from_b
    assert [r["prediction"] for r in from_a] == [str(v) for v in iris_estimator.predict(x)]
    assert accepting.terminate() == 0
    assert working.terminate() == 0


def test_a_job_survives_sigkill_mid_chunk_and_completes_after_restart(
    launch: Callable[..., MlserveProcess], tmp_path: Path
) -> None:
    rows, chunk, held_from = 40, 5, 10
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold").touch()
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate), hold_from=held_from).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    env = {"MLSERVE_JOBS__CHUNK_SIZE": str(chunk), "MLSERVE_JOBS__LEASE_S": "2"}
    inputs = [[float(i), 0.5] for i in range(rows)]

    first = launch(registry.root, **env)
    with httpx.Client(base_url=first.url, timeout=10) as http:
        submitted = http.post("/api/predict/async", json={"records": inputs})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        # Two chunks stored, the third inside the model (held): kill the server there.
        held = wait_for(http, job_id, lambda j: j["progress"]["done"] == held_from)
        deadline = time.monotonic() + WAIT_S
        while not any(x0 == held_from for _, x0, _ in calls(gate)):
            assert time.monotonic() < deadline, calls(gate)
            time.sleep(0.02)  # polling interval of a bounded wait
    first.process.kill()  # SIGKILL: no shutdown, no lease given back
    first.process.wait()
    assert held["status"] == "running"
    (gate / "hold").unlink()

    second = launch(registry.root, **env)
    with httpx.Client(base_url=second.url, timeout=10) as http:
        finished = wait_for(http, job_id, lambda j: j["status"] in ("completed", "failed"))
        answers = results(http, job_id)

    assert finished["status"] == "completed", finished
    assert finished["progress"] == {"done": rows, "total": rows}
    assert [a["prediction"] for a in answers] == [2 * i + 0.5 for i in range(rows)]
    # The new process resumed at the first chunk without results: what the killed one had
    # stored was not scored again, and every chunk from the held one on was.
    resumed = sorted(x0 for pid, x0, n in calls(gate) if pid == second.process.pid and n > 1)
    assert resumed == [float(i) for i in range(held_from, rows, chunk)]
    assert second.terminate() == 0
    assert "Traceback" not in second.output()
