"""Async jobs whose server keeps dying (SQLite job store): attempts that saved a chunk are not
held against the job, and a job that fails for good keeps the rows it scored and its inputs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess
from support.wait import wait_for as bounded_wait

from mlserve.registry import Registry

from . import broken_models
from .jobs_helpers import FLOWERS, submit, wait_for
from .slow_models import FileGatedRegressor

WAIT_S = 60.0  # generous: the machine running the suite may be busy
ROWS, CHUNK, KILLS = 2000, 4, 8


def status(http: httpx.Client, job_id: str) -> Any:
    response = http.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def progressed(http: httpx.Client, job_id: str, start: int) -> Any:
    """The job once it has more than `start` rows done; fails at once if it stopped running."""
    job = status(http, job_id)
    assert job["status"] in ("pending", "running"), job
    return job["progress"]["done"] > start and job


def wait_until(
    check: Callable[[], Any], what: str, details: Callable[[], str] | None = None
) -> Any:
    """support.wait.wait_for with this module's deadline and a fine polling interval."""
    return bounded_wait(check, what, WAIT_S, details=details, interval=0.005)


@pytest.mark.slow
def test_a_job_whose_server_is_killed_8_times_after_progress_completes_exactly(
    tmp_path: Path, start_server: Callable[..., MlserveProcess]
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate)).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    env = {"MLSERVE_JOBS__CHUNK_SIZE": str(CHUNK), "MLSERVE_JOBS__LEASE_S": "1"}
    inputs = [[float(i), 0.5] for i in range(ROWS)]
    servers: list[MlserveProcess] = []

    def launch() -> MlserveProcess:
        server = start_server(registry.root, env=env, log_level="warning")
        server.wait_ready()
        servers.append(server)
        return server

    def logs() -> str:
        return "\n".join(f"--- {s.name}\n{s.output()[-3000:]}" for s in servers)

    server = launch()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        submitted = http.post("/api/predict/async", json={"records": inputs})
        assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    progress: list[int] = []
    for _ in range(KILLS):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            start = status(http, job_id)["progress"]["done"]
            # This process saved a chunk of its own: kill it there, mid-job.
            seen = wait_until(
                lambda: progressed(http, job_id, start),  # noqa: B023 - called right here
                "progress by this server",
                logs,
            )
        server.kill()  # SIGKILL: no shutdown, no lease given back
        assert seen["status"] == "running", seen
        progress.append(seen["progress"]["done"])
        server = launch()

    with httpx.Client(base_url=server.url, timeout=10) as http:
        finished = wait_until(
            lambda: (j := status(http, job_id))["status"] != "running" and j, "the end", logs
        )
        lines = http.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})

    assert finished["status"] == "completed", (finished, logs())
    assert finished["progress"] == {"done": ROWS, "total": ROWS}
    assert progress == sorted(progress) and progress[-1] < ROWS, progress
    answers = [json.loads(line)["prediction"] for line in lines.text.splitlines()]
    assert answers == [2 * i + 0.5 for i in range(ROWS)]  # every row once, in order
    assert server.terminate() == 0


def test_a_job_failing_for_good_keeps_its_scored_rows_and_its_inputs(
    registry: Registry, poisonable_estimator: Any, serve: Callable[..., TestClient]
) -> None:
    registry.register_estimator(
        poisonable_estimator, name="poison", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(jobs={"chunk_size": 2})
    rows = [*FLOWERS, [-999.0, 1.0, 1.0, 1.0], *FLOWERS]  # the third chunk fails

    job = submit(client, json={"records": rows})
    failed = wait_for(client, job["job_id"])
    url = f"/api/jobs/{job['job_id']}/result"
    first = client.get(url, params={"limit": 3}).json()
    second = client.get(url, params={"offset": first["next_offset"], "limit": 3}).json()
    streamed = client.get(url, params={"format": "jsonl"})
    past = client.get(url, params={"offset": 4}).json()

    assert failed["status"] == "failed"
    assert failed["progress"] == {"done": 4, "total": 11}
    assert failed["error"] == "rows 4-5: model poison:1 failed to predict"
    assert (first["status"], first["done"], first["total"]) == ("failed", 4, 11)
    assert first["error"] == failed["error"]
    assert (len(first["predictions"]), first["next_offset"]) == (3, 3)
    assert (len(second["predictions"]), second["next_offset"]) == (1, None)
    assert streamed.status_code == 200
    assert streamed.headers["X-Job-Status"] == "failed"
    assert (streamed.headers["X-Job-Done"], streamed.headers["X-Job-Total"]) == ("4", "11")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines == first["predictions"] + second["predictions"]
    assert (past["predictions"], past["next_offset"]) == ([], None)
    assert broken_models.SECRET_DETAIL not in str(first)
    # The inputs it did not score are kept until the job expires.
    database = client.app.state.mlserve.settings.jobs_database  # type: ignore[attr-defined]
    with sqlite3.connect(database) as db:
        kept = db.execute(
            "SELECT chunk FROM job_inputs WHERE job_id = ? ORDER BY chunk", (job["job_id"],)
        ).fetchall()
    assert [c for (c,) in kept] == [2, 3, 4, 5]
    # Deleting the job removes them with it.
    assert client.delete(f"/api/jobs/{job['job_id']}").status_code == 204
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0] == 0
