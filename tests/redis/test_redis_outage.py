"""Faults with real processes: Redis stopped and restarted under traffic, a worker killed
mid-job. Predictions never fail, health tells the truth, and no accepted job is lost."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.data import iris as iris_data
from support.data import iris_estimator
from support.net import free_port
from support.redis import SKIP_REASON, TEST_REDIS_URL, RedisServer, delete_prefixed
from support.servers import MlserveProcess, serve
from support.servers import start_worker as start_worker_process
from support.wait import wait_for

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")
pytest.importorskip("celery", reason="the mlserve-sklearn[redis] extra is not installed")

from server.slow_models import FileGatedRegressor, calls

from mlserve.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WAIT_S = 60.0
ROWS, CHUNK, HELD_FROM = 40, 5, 10


def paced_registry(root: Path, gate: Path) -> tuple[Registry, Any, Any]:
    """iris@production for live traffic, and `paced` (2·x0 + x1, held mid-job while the file
    gate/hold exists) for jobs."""
    gate.mkdir(parents=True, exist_ok=True)
    iris = iris_estimator()
    registry = Registry(root)
    registry.register_estimator(iris, name="iris", aliases=["production"])
    train = np.column_stack([np.arange(6.0), np.ones(6)])
    registry.register_estimator(
        FileGatedRegressor(gate_dir=str(gate), hold_from=HELD_FROM).fit(train, np.zeros(6)),
        name="paced",
        aliases=["production"],
    )
    return registry, iris, iris_data()[0]


def job_settings(url: str, prefix: str) -> dict[str, str]:
    return {
        "MLSERVE_REDIS__URL": url,
        "MLSERVE_REDIS__KEY_PREFIX": prefix,
        "MLSERVE_REDIS__HEALTH_CHECK_INTERVAL_S": "0.5",
        "MLSERVE_REDIS__SOCKET_TIMEOUT_S": "0.5",
        "MLSERVE_REDIS__CONNECT_TIMEOUT_S": "0.5",
        "MLSERVE_JOBS__CHUNK_SIZE": str(CHUNK),
        "MLSERVE_JOBS__LEASE_S": "2",
        "MLSERVE_JOBS__TTL_S": "600",
        "MLSERVE_LOGGING__LEVEL": "info",
    }


def start_server(root: Path, registry: Path, env: dict[str, str]) -> MlserveProcess:
    server = serve(registry, root / "home", env=env, log_level=None)
    server.wait_ready()
    return server


def start_worker(root: Path, registry: Path, env: dict[str, str], n: int) -> MlserveProcess:
    worker = start_worker_process(registry, root / "home", env=env, name=f"worker-{n}")
    worker.wait_log("ready.")
    return worker


class Traffic:
    """Predictions sent back to back from a thread, every status recorded."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url, self.body = url, body
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                try:
                    self.statuses.append(http.post("/api/predict", json=self.body).status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes to stop at the end of the test, whatever happened."""
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        if isinstance(proc, RedisServer):
            proc.stop()
        else:
            proc.kill()


def job_status(http: httpx.Client, job_id: str) -> Any:
    return http.get(f"/api/jobs/{job_id}")


def predictions(http: httpx.Client, job_id: str) -> list[Any]:
    lines = http.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})
    assert lines.status_code == 200, lines.text
    return [json.loads(line)["prediction"] for line in lines.text.splitlines()]


def test_redis_stopped_and_restarted_under_traffic_loses_nothing(
    tmp_path: Path, procs: list[Any]
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (Debian: apt-get install redis-server)")
    gate = tmp_path / "gate"
    registry, iris, x = paced_registry(tmp_path / "registry", gate)
    redis = RedisServer(port=free_port(), folder=tmp_path / "redis")
    procs.append(redis)
    redis.start()
    env = job_settings(redis.url, "outage:")
    server = start_server(tmp_path, registry.root, env)
    procs.append(server)
    worker = start_worker(tmp_path, registry.root, env, 1)
    procs.append(worker)

    def logs() -> str:
        return f"--- server\n{server.output()[-5000:]}\n--- worker\n{worker.output()[-5000:]}"

    def health() -> Any:
        return http.get("/api/health").json()

    (gate / "hold").touch()
    inputs = [[float(i), 0.5] for i in range(ROWS)]
    with (
        httpx.Client(base_url=server.url, timeout=10) as http,
        Traffic(server.url, {"model": "iris", "features": x[0].tolist()}) as traffic,
    ):
        # Accepted before the outage, and in progress when it starts (held mid-chunk).
        accepted = http.post("/api/predict/async", json={"model": "paced", "records": inputs})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        wait_for(
            lambda: job_status(http, job_id).json()["progress"]["done"] == HELD_FROM,
            "the job held mid-way",
            WAIT_S,
            details=logs,
        )
        before = len(traffic.statuses)

        redis.stop()  # SIGTERM, as an orchestrator would
        down = wait_for(
            lambda: (h := health())["status"] == "degraded" and h,
            "health degraded",
            WAIT_S,
            details=logs,
        )
        refused = http.post("/api/predict/async", json={"model": "iris", "features": x[0].tolist()})
        unreadable = job_status(http, job_id)
        during = len(traffic.statuses)
        (gate / "hold").unlink()  # the worker goes on scoring; its writes wait for Redis
        wait_for(
            lambda: len(traffic.statuses) > during + 20,
            "traffic during the outage",
            30,
            details=logs,
        )

        redis.start()  # same port, same data (append-only file)
        up = wait_for(
            lambda: (h := health())["status"] == "healthy" and h,
            "health healthy",
            WAIT_S,
            details=logs,
        )
        finished = wait_for(
            lambda: (
                (j := job_status(http, job_id).json())["status"] in ("completed", "failed") and j
            ),
            "the job finished after the outage",
            WAIT_S,
            details=logs,
        )
        answers = predictions(http, job_id)
        after = http.post("/api/predict/async", json={"model": "iris", "features": x[0].tolist()})

    assert traffic.errors == []
    assert set(traffic.statuses) == {200}, sorted(set(traffic.statuses))  # never failed
    assert len(traffic.statuses) > before > 0
    assert down["dependencies"] == {"redis": "down"}
    assert all(m["status"] == "healthy" for m in down["models"])
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "jobs_unavailable"
    assert unreadable.status_code == 503
    assert up["dependencies"] == {"redis": "up"}
    assert finished["status"] == "completed", finished
    assert finished["progress"] == {"done": ROWS, "total": ROWS}
    assert answers == [2 * i + 0.5 for i in range(ROWS)]
    assert after.status_code == 202
    server_log = server.output()
    state_lines = [line for line in server_log.splitlines() if "mlserve.backends.redis" in line]
    assert len(state_lines) == 3, state_lines  # one per change of state, not per request
    assert "is reachable" in state_lines[0]
    assert "is unreachable" in state_lines[1]
    assert "is reachable again" in state_lines[2]
    assert "Traceback" not in server_log


@pytest.fixture
def shared_redis() -> Iterator[tuple[str, str]]:
    """The test Redis (not stopped by this test) and a fresh key prefix."""
    if TEST_REDIS_URL is None:
        pytest.skip(SKIP_REASON)
    prefix = f"mlst-{uuid.uuid4().hex[:10]}:"
    yield TEST_REDIS_URL, prefix
    delete_prefixed(TEST_REDIS_URL, prefix)


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_in_order(
    tmp_path: Path, procs: list[Any], shared_redis: tuple[str, str]
) -> None:
    gate = tmp_path / "gate"
    registry, _, _ = paced_registry(tmp_path / "registry", gate)
    env = job_settings(*shared_redis)
    server = start_server(tmp_path, registry.root, env)
    procs.append(server)
    first = start_worker(tmp_path, registry.root, env, 1)
    procs.append(first)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in procs)

    (gate / "hold").touch()
    inputs = [[float(i), 0.5] for i in range(ROWS)]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        accepted = http.post("/api/predict/async", json={"model": "paced", "records": inputs})
        job_id = accepted.json()["job_id"]
        # Two chunks stored, the third inside the model (held): kill the worker there.
        wait_for(
            lambda: any(pid == first.pid and x0 == HELD_FROM for pid, x0, _ in calls(gate)),
            "the worker inside the held chunk",
            WAIT_S,
            details=logs,
        )
        first.kill()  # SIGKILL: no shutdown, no lease given back, the task unacknowledged
        held = job_status(http, job_id).json()
        (gate / "hold").unlink()
        second = start_worker(tmp_path, registry.root, env, 2)
        procs.append(second)
        finished = wait_for(
            lambda: (
                (j := job_status(http, job_id).json())["status"] in ("completed", "failed") and j
            ),
            "the job completed by the new worker",
            WAIT_S,
            details=logs,
        )
        answers = predictions(http, job_id)

    assert accepted.status_code == 202
    assert (held["status"], held["progress"]["done"]) == ("running", HELD_FROM)
    assert finished["status"] == "completed", finished
    assert answers == [2 * i + 0.5 for i in range(ROWS)]
    # The new worker resumed at the first chunk without results: what the killed one stored
    # was not scored again, and every chunk from the held one on was scored once.
    resumed = sorted(x0 for pid, x0, n in calls(gate) if pid == second.pid and n == CHUNK)
    assert resumed == [float(i) for i in range(HELD_FROM, ROWS, CHUNK)]
    assert "nobody is working on it; dispatching it again" in server.output()
    assert second.terminate() == 0


def test_a_worker_stopped_with_sigterm_gives_the_job_back_after_its_chunk(
    tmp_path: Path, procs: list[Any], shared_redis: tuple[str, str]
) -> None:
    gate = tmp_path / "gate"
    registry, _, _ = paced_registry(tmp_path / "registry", gate)
    env = job_settings(*shared_redis)
    server = start_server(tmp_path, registry.root, env)
    procs.append(server)
    first = start_worker(tmp_path, registry.root, env, 1)
    procs.append(first)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in procs)

    (gate / "hold").touch()
    inputs = [[float(i), 0.5] for i in range(ROWS)]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        job_id = http.post("/api/predict/async", json={"model": "paced", "records": inputs}).json()[
            "job_id"
        ]
        wait_for(
            lambda: any(pid == first.pid and x0 == HELD_FROM for pid, x0, _ in calls(gate)),
            "the worker inside the held chunk",
            WAIT_S,
            details=logs,
        )
        first.process.send_signal(signal.SIGTERM)  # warm shutdown, as Kubernetes stops a pod
        first.wait_log("Warm shutdown")
        (gate / "hold").unlink()  # the chunk in progress finishes...
        exit_code = first.process.wait(30)
        handed_back = job_status(http, job_id).json()
        second = start_worker(tmp_path, registry.root, env, 2)
        procs.append(second)
        finished = wait_for(
            lambda: (j := job_status(http, job_id).json())["status"] == "completed" and j,
            "the job completed by the next worker",
            WAIT_S,
            details=logs,
        )
        answers = predictions(http, job_id)

    assert exit_code == 0
    # ...is saved, and the job is given back at once instead of holding the shutdown.
    assert (handed_back["status"], handed_back["progress"]["done"]) == (
        "running",
        HELD_FROM + CHUNK,
    )
    assert f"job {job_id}: given back on shutdown" in first.output()
    assert finished["progress"] == {"done": ROWS, "total": ROWS}
    assert answers == [2 * i + 0.5 for i in range(ROWS)]
