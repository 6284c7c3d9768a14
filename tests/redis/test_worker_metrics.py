"""`mlserve worker --metrics-port`: a real worker exports the metrics of the jobs it scores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import iris, iris_estimator
from support.metrics import scrape, value
from support.net import free_port, silent_port
from support.redis import SKIP_REASON, TEST_REDIS_URL, delete_prefixed
from support.servers import READY_S, MlserveProcess, process_env, serve, start_worker
from support.wait import wait_for

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")
pytest.importorskip("celery", reason="the mlserve-sklearn[redis] extra is not installed")

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WAIT_S = 60.0
CHUNK = 40


@dataclass
class Stack:
    server: MlserveProcess
    worker: MlserveProcess
    metrics_url: str
    x: Any
    model: ModelMetadata

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in (self.server, self.worker))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if TEST_REDIS_URL is None:
        pytest.skip(SKIP_REASON)
    root = tmp_path_factory.mktemp("worker-metrics")
    registry = Registry(root / "registry")
    model = registry.register_estimator(iris_estimator(), name="iris", aliases=["production"])
    prefix = f"mlwm-{uuid.uuid4().hex[:10]}:"
    settings = {
        "MLSERVE_REDIS__URL": TEST_REDIS_URL,
        "MLSERVE_REDIS__KEY_PREFIX": prefix,
        "MLSERVE_JOBS__CHUNK_SIZE": str(CHUNK),
        "MLSERVE_JOBS__LEASE_S": "5",
        "MLSERVE_JOBS__TTL_S": "600",
    }
    home, metrics_port = root / "home", free_port()
    procs: list[MlserveProcess] = []
    try:
        procs.append(serve(registry.root, home, env=settings, log_level=None, name="server"))
        procs.append(
            start_worker(
                registry.root, home, env=settings, args=["--metrics-port", str(metrics_port)]
            )
        )
        procs[0].wait_ready()
        procs[1].wait_log("ready.")  # Celery: consuming the queue
        yield Stack(*procs, f"http://127.0.0.1:{metrics_port}/metrics", iris()[0], model)  # type: ignore[call-arg]
    finally:
        for proc in procs:
            proc.terminate()
        delete_prefixed(TEST_REDIS_URL, prefix)


def test_the_worker_exports_the_rows_and_the_finished_job_it_scored(stack: Stack) -> None:
    before = scrape(stack.metrics_url)
    assert value(before, "mlserve_jobs_running") == 0
    assert value(before, "mlserve_jobs_finished_total") == 0

    with httpx.Client(base_url=stack.server.url, timeout=10) as client:
        accepted = client.post(
            "/api/predict/async", json={"model": "iris", "records": stack.x.tolist()}
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        wait_for(
            lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "completed",
            "the job completed",
            WAIT_S,
            details=stack.logs,
        )
        server = scrape(f"{stack.server.url}/metrics")
    worker = wait_for(
        lambda: (
            (s := scrape(stack.metrics_url))
            and value(s, "mlserve_jobs_finished_total", model="iris")
            and s
        ),
        "the worker counted the finished job",
        WAIT_S,
        details=stack.logs,
    )

    rows = len(stack.x)
    assert value(worker, "mlserve_jobs_finished_total", model="iris", status="succeeded") == 1
    assert value(worker, "mlserve_jobs_finished_total") == 1
    assert value(worker, "mlserve_job_rows_total", model="iris") == rows
    chunks = value(worker, "mlserve_job_chunk_duration_seconds_count", model="iris")
    assert chunks == -(-rows // CHUNK) >= 1
    assert value(worker, "mlserve_jobs_running") == 0
    # The server accepted the job and scored none of it.
    assert value(server, "mlserve_jobs_submitted_total", model="iris") == 1
    assert value(server, "mlserve_jobs_finished_total") == 0
    assert value(server, "mlserve_job_rows_total") == 0


def test_the_worker_exports_the_model_versions_it_has_loaded_as_the_server_does(
    stack: Stack,
) -> None:
    worker = scrape(stack.metrics_url)
    server = scrape(f"{stack.server.url}/metrics")

    want = {
        "model": "iris",
        "version": str(stack.model.version),
        "sha256": stack.model.sha256,
        "format": stack.model.format,
    }
    assert [(s.labels, s.value) for s in worker.get("mlserve_model_info", [])] == [(want, 1.0)]
    assert [s.labels for s in server["mlserve_model_info"]] == [want]


def test_a_taken_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with silent_port() as port:
        env = process_env(tmp_path / "home", MLSERVE_REDIS__URL="redis://127.0.0.1:1/0")
        proc = MlserveProcess.start(
            ["worker", "--metrics-port", str(port)], cwd=tmp_path, env=env, name="worker"
        )
        try:
            code = proc.process.wait(READY_S)
        finally:
            proc.kill()

    assert code == 1, proc.output()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.output()
    assert "Traceback" not in proc.output()
