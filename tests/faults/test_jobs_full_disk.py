"""Async jobs on a full disk (SQLite job store): a submission that cannot be stored answers
503 jobs_unavailable in the one error shape (as in Redis mode), never a 500; predictions go
on, and jobs are accepted again once there is room.

SQLite's own "database or disk is full" (SQLITE_FULL, what it reports on ENOSPC) injected by
capping the database's pages, everywhere; a real small tmpfs where the machine lets the tests
mount one (root: CI)."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, iris_estimator
from support.servers import MlserveProcess

from mlserve.backends.sqlite import SqliteDatabase
from mlserve.config import load_settings
from mlserve.registry import Registry
from mlserve.server.app import create_app

from .test_registry_faults import fill, small_tmpfs

FLOWER = [5.1, 3.5, 1.4, 0.2]
ROWS = 3000  # ~100 KB of inputs: more than is left on the full disk
DEFAULT_MAX_PAGES = 1073741823  # SQLite's default max_page_count
WAIT_S = 60.0


def refused_as_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "jobs_unavailable", error
    assert "disk is full" in error["message"], error
    assert set(response.json()) == {"error"}


def cap_pages(database: SqliteDatabase, pages: int | None) -> None:
    """Every connection the store uses from now on may grow its file to `pages` pages at most
    (None: the current size, so any write that needs a new page fails with SQLITE_FULL)."""
    connection = SqliteDatabase.connection

    def capped(self: SqliteDatabase) -> Any:
        db = connection(self)
        limit = pages or db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {int(limit)}")
        return db

    database.connection = types.MethodType(capped, database)  # type: ignore[method-assign]


def wait_completed(get: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while (job := get())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)  # polling interval of a bounded wait
    return job


def test_a_job_submitted_to_a_full_job_store_is_503_and_accepted_once_there_is_room(
    tmp_path: Path, registry: Registry
) -> None:
    registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    settings = load_settings(
        None, home=str(tmp_path / "home"), registry={"path": str(registry.root)}
    )
    records = {"records": [FLOWER] * ROWS}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        database = client.app.state.mlserve.jobs._db  # type: ignore[attr-defined]
        cap_pages(database, None)
        refused = client.post("/api/predict/async", json=records)
        predicted = client.post("/api/predict", json={"features": FLOWER})

        cap_pages(database, DEFAULT_MAX_PAGES)  # room again
        accepted = client.post("/api/predict/async", json=records)
        assert accepted.status_code == 202, accepted.text
        url = accepted.json()["status_url"]
        finished = wait_completed(lambda: client.get(url).json())

    refused_as_unavailable(refused)
    assert predicted.status_code == 200, predicted.text
    assert finished["status"] == "completed", finished


@pytest.mark.slow
def test_a_real_full_disk_under_the_job_store_refuses_jobs_with_503_and_the_server_serves(
    tmp_path: Path, start_server: Callable[..., MlserveProcess]
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    records = {"records": [FLOWER] * ROWS}
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        server = start_server(
            registry.root, env={"MLSERVE_JOBS__DATABASE": str(disk / "jobs.sqlite3")}
        )
        server.wait_ready()
        filler = fill(disk, leave_bytes=16 * 1024)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            refused = http.post("/api/predict/async", json=records)
            predicted = http.post("/api/predict", json={"features": FLOWER})
            filler.unlink()
            accepted = http.post("/api/predict/async", json=records)
            assert accepted.status_code == 202, accepted.text
            url = accepted.json()["status_url"]
            finished = wait_completed(lambda: http.get(url).json())
        assert server.terminate() == 0

    refused_as_unavailable(refused)
    assert predicted.status_code == 200, predicted.text
    assert finished["status"] == "completed", finished
    assert "Traceback" not in server.output()
