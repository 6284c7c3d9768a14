"""`mlserve worker --metrics-port`: a real worker exports the metrics of the jobs it scores."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_procs import (
    READY_S,
    SKIP_REASON,
    TEST_REDIS_URL,
    Proc,
    base_env,
    delete_prefixed,
    free_port,
    wait_for,
)

pytest.importorskip("redis", reason="the mlserve[redis] extra is not installed")
pytest.importorskip("celery", reason="the mlserve[redis] extra is not installed")

from prometheus_client.parser import text_string_to_metric_families

from mlserve.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WAIT_S = 60.0
CHUNK = 40


@dataclass
class Stack:
    server: Proc
    worker: Proc
    metrics_url: str
    x: Any

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in (self.server, self.worker))


def scrape(url: str) -> dict[str, list[Any]]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if TEST_REDIS_URL is None:
        pytest.skip(SKIP_REASON)
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("worker-metrics")
    data = load_iris()
    estimator = LogisticRegression(max_iter=1000).fit(data.data, data.target_names[data.target])
    registry = Registry(root / "registry")
    registry.register_estimator(estimator, name="iris", aliases=["production"])
    prefix = f"mlwm-{uuid.uuid4().hex[:10]}:"
    env = base_env(
        root / "home",
        MLSERVE_REDIS__URL=TEST_REDIS_URL,
        MLSERVE_REDIS__KEY_PREFIX=prefix,
        MLSERVE_JOBS__CHUNK_SIZE=str(CHUNK),
        MLSERVE_JOBS__LEASE_S="5",
        MLSERVE_JOBS__TTL_S="600",
    )
    port, metrics_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(
            Proc.start(
                "server",
                ["serve", "--port", str(port), "--registry", str(registry.root), "--no-sample"],
                cwd=root,
                env=env,
                url=f"http://127.0.0.1:{port}",
            )
        )
        worker_args = ["worker", "--registry", str(registry.root)]
        procs.append(
            Proc.start(
                "worker", [*worker_args, "--metrics-port", str(metrics_port)], cwd=root, env=env
            )
        )
        procs[0].wait_ready()
        procs[1].wait_log("ready.")  # Celery: consuming the queue
        yield Stack(*procs, f"http://127.0.0.1:{metrics_port}/metrics", data.data)  # type: ignore[call-arg]
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
            stack.logs,
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
        stack.logs,
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


def test_a_taken_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(tmp_path / "home", MLSERVE_REDIS__URL="redis://127.0.0.1:1/0")
        worker = Proc.start(
            "worker", ["worker", "--metrics-port", str(port)], cwd=tmp_path, env=env
        )
        try:
            code = worker.process.wait(READY_S)
        finally:
            worker.kill()

    assert code == 1, worker.output()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in worker.output()
    assert "Traceback" not in worker.output()
