"""Async-job metrics of the embedded runner: submitted, finished by status, rows, chunk time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES
from support.metrics import scrape, value

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from . import broken_models
from .jobs_helpers import FLOWERS, TEXTS, WAIT_S, submit, wait_for


def wait_for_value(
    client: TestClient, name: str, expected: float, **labels: str
) -> dict[str, list[Any]]:
    """Scrape until `name{labels}` reaches `expected` (bounded): a job's status is stored a
    moment before the runner that finished it counts it."""
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = scrape(client)
        if value(samples, name, **labels) >= expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.01)  # polling interval of a bounded wait, not a wait for state


def test_a_completed_job_is_counted_submitted_succeeded_with_its_rows_and_chunks(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(jobs={"chunk_size": 2})
    before = scrape(client)
    assert value(before, "mlserve_jobs_submitted_total") == 0
    assert value(before, "mlserve_jobs_running") == 0

    job = submit(client, json={"texts": TEXTS, "model": "sentiment"})
    assert wait_for(client, job["job_id"])["status"] == "completed"
    samples = wait_for_value(client, "mlserve_jobs_finished_total", 1, model="sentiment")

    assert value(samples, "mlserve_jobs_submitted_total", model="sentiment") == 1
    assert value(samples, "mlserve_jobs_finished_total", model="sentiment", status="succeeded") == 1
    assert value(samples, "mlserve_jobs_finished_total", status="failed") == 0
    assert value(samples, "mlserve_jobs_finished_total", status="cancelled") == 0
    assert value(samples, "mlserve_job_rows_total", model="sentiment") == len(TEXTS)
    chunks = (len(TEXTS) + 1) // 2
    count = value(samples, "mlserve_job_chunk_duration_seconds_count", model="sentiment")
    assert count == chunks >= 1
    assert value(samples, "mlserve_job_chunk_duration_seconds_sum", model="sentiment") > 0
    assert value(samples, "mlserve_jobs_running") == 0


def test_a_cancelled_pending_job_counts_as_cancelled(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    idle = serve(jobs={"concurrency": 0})  # accepts jobs, never runs them
    job = submit(idle, json={"texts": TEXTS, "model": "sentiment"})

    assert idle.delete(f"/api/jobs/{job['job_id']}").status_code == 200
    assert idle.delete(f"/api/jobs/{job['job_id']}").status_code == 204  # deleted: not again

    samples = scrape(idle)
    assert value(samples, "mlserve_jobs_submitted_total", model="sentiment") == 1
    assert value(samples, "mlserve_jobs_finished_total", model="sentiment", status="cancelled") == 1
    assert value(samples, "mlserve_jobs_finished_total") == 1
    assert value(samples, "mlserve_job_rows_total") == 0


def test_a_running_job_shows_in_the_gauge_and_counts_once_when_cancelled(
    registry: Registry,
    gated_estimator: Callable[[str], Any],
    iris_estimator: Any,
    gate: tuple[str, broken_models.Gate],
    serve: Callable[..., TestClient],
) -> None:
    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="gated", feature_names=IRIS_FEATURES, check=False
    )
    registry.register_estimator(iris_estimator, name="iris", feature_names=IRIS_FEATURES)
    client = serve(jobs={"chunk_size": 2})
    held.entered.clear()
    job = submit(client, json={"records": FLOWERS, "model": "gated"})
    assert held.entered.wait(WAIT_S)  # the first chunk is in the model

    assert value(scrape(client), "mlserve_jobs_running") == 1
    assert client.delete(f"/api/jobs/{job['job_id']}").status_code == 200
    held.release.set()
    # One runner loop: once it has finished a later job, it is done with the cancelled one.
    later = submit(client, json={"records": FLOWERS, "model": "iris"})
    assert wait_for(client, later["job_id"])["status"] == "completed"
    samples = wait_for_value(client, "mlserve_jobs_finished_total", 1, model="iris")

    assert value(samples, "mlserve_jobs_finished_total", model="gated", status="cancelled") == 1
    assert value(samples, "mlserve_jobs_finished_total", model="gated") == 1
    assert value(samples, "mlserve_jobs_finished_total", model="iris", status="succeeded") == 1
    assert value(samples, "mlserve_jobs_running") == 0


def test_a_job_the_model_fails_counts_as_failed(
    registry: Registry, poisonable_estimator: Any, serve: Callable[..., TestClient]
) -> None:
    registry.register_estimator(
        poisonable_estimator, name="poison", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(jobs={"chunk_size": 2})
    rows = [FLOWERS[0], FLOWERS[1], [-999.0, 1.0, 1.0, 1.0]]

    job = submit(client, json={"records": rows})
    assert wait_for(client, job["job_id"])["status"] == "failed"
    samples = wait_for_value(client, "mlserve_jobs_finished_total", 1, model="poison")

    assert value(samples, "mlserve_jobs_finished_total", model="poison", status="failed") == 1
    assert value(samples, "mlserve_jobs_finished_total", status="succeeded") == 0
    assert value(samples, "mlserve_job_rows_total", model="poison") == 2  # the first chunk
