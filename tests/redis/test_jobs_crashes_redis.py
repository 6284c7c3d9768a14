"""Async jobs in Redis whose workers keep dying: attempts that saved a chunk are not held
against the job (8 Celery workers killed after progress, the job completes exactly), and a
job that fails for good keeps its scored rows and its inputs until it expires."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")
pytest.importorskip("celery", reason="the mlserve-sklearn[redis] extra is not installed")

from server.slow_models import FileGatedRegressor
from support.servers import MlserveProcess, serve, start_worker
from support.wait import wait_for

from mlserve.jobs.redis import RedisJobStore
from mlserve.registry import Registry

Run = Callable[[Coroutine[Any, Any, Any]], Any]
WAIT_S = 60.0
ROWS, CHUNK, KILLS = 2000, 4, 8


def wait_until(
    check: Callable[[], Any], what: str, details: Callable[[], str] | None = None
) -> Any:
    """support.wait.wait_for with this module's deadline and a fine polling interval."""
    return wait_for(check, what, WAIT_S, details=details, interval=0.005)


@pytest.fixture
def procs() -> Iterator[list[MlserveProcess]]:
    """Processes to stop at the end of the test, whatever happened."""
    started: list[MlserveProcess] = []
    yield started
    for proc in reversed(started):
        proc.kill()


@pytest.mark.slow
@pytest.mark.redis
def test_a_job_whose_worker_is_killed_8_times_after_progress_completes_exactly(
    tmp_path: Path, procs: list[MlserveProcess], redis_url: str, key_prefix: str
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate)).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    env = {
        "MLSERVE_REDIS__URL": redis_url,
        "MLSERVE_REDIS__KEY_PREFIX": key_prefix,
        "MLSERVE_JOBS__CHUNK_SIZE": str(CHUNK),
        "MLSERVE_JOBS__LEASE_S": "1",
        "MLSERVE_LOGGING__LEVEL": "warning",
    }
    home = tmp_path / "home"
    server = serve(registry.root, home, env=env)
    procs.append(server)
    server.wait_ready()

    def new_worker(n: int) -> MlserveProcess:
        worker = start_worker(registry.root, home, env=env, name=f"worker-{n}")
        procs.append(worker)
        return worker

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in procs)

    def status(http: httpx.Client, job_id: str) -> Any:
        response = http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def progressed(http: httpx.Client, job_id: str, start: int) -> Any:
        job = status(http, job_id)
        assert job["status"] in ("pending", "running"), (job, logs())
        return job["progress"]["done"] > start and job

    inputs = [[float(i), 0.5] for i in range(ROWS)]
    progress: list[int] = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        accepted = http.post("/api/predict/async", json={"records": inputs})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        worker = new_worker(0)
        for n in range(KILLS):
            start = status(http, job_id)["progress"]["done"]
            seen = wait_until(
                lambda: progressed(http, job_id, start),  # noqa: B023 - called right here
                "progress by this worker",
                logs,
            )
            worker.kill()  # SIGKILL: no shutdown, no lease given back, the task unacknowledged
            assert seen["status"] == "running", seen
            progress.append(seen["progress"]["done"])
            worker = new_worker(n + 1)
        finished = wait_until(
            lambda: (j := status(http, job_id))["status"] != "running" and j, "the end", logs
        )
        lines = http.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})

    assert finished["status"] == "completed", (finished, logs())
    assert finished["progress"] == {"done": ROWS, "total": ROWS}
    assert progress == sorted(progress) and progress[-1] < ROWS, progress
    answers = [json.loads(line)["prediction"] for line in lines.text.splitlines()]
    assert answers == [2 * i + 0.5 for i in range(ROWS)]  # every row once, in order
    assert worker.terminate() == 0


@pytest.mark.redis
def test_a_failed_job_keeps_its_scored_rows_and_its_inputs_until_it_expires(
    make_backend: Callable[..., Any], run: Run, redis_client: Any
) -> None:
    store = RedisJobStore(make_backend(), chunk_size=3, ttl_s=600.0)
    job = run(
        store.submit(
            model_reference=None,
            model="m",
            version=1,
            kind="texts",
            inputs=[f"text {i}" for i in range(8)],
        )
    )
    outcome, _ = run(store.claim(job.id, "w", 10.0))
    assert outcome == "claimed"
    run(store.save_chunk_result(job.id, "w", 0, [{"row": i} for i in range(3)], 10.0))
    failed = run(store.fail(job.id, "w", "rows 3-5: model m:1 failed to predict"))

    page = run(store.results(job.id, 0, 100))
    rest = run(store.results(job.id, 2, 100))
    base = store.backend.key("job", job.id)

    assert (failed.status, failed.done) == ("failed", 3)
    assert [item["row"] for item in page.items] == [0, 1, 2]
    assert page.next_offset is None
    assert [item["row"] for item in rest.items] == [2]
    assert sorted(int(c) for c in redis_client.hkeys(f"{base}:in")) == [1, 2]
    for key in (base, f"{base}:in", f"{base}:todo", f"{base}:out"):
        assert 0 < redis_client.pttl(key) <= 600_000, key  # kept, then dropped with the job
