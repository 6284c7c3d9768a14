"""Helpers for the async-job tests (routes and metrics): inputs, submit, a bounded wait."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from support.data import UNSEEN_TEXTS

TEXTS = UNSEEN_TEXTS
FLOWERS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
    [4.9, 3.0, 1.4, 0.2],
    [6.3, 2.5, 5.0, 1.9],
]
FINISHED = ("completed", "failed", "cancelled")
WAIT_S = 30.0  # generous: the machine running the suite may be busy


def wait_for(client: TestClient, job_id: str, statuses: tuple[str, ...] = FINISHED) -> Any:
    """Poll the job until its status is one of `statuses` (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = client.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {body['status']} after {WAIT_S} s: {body}")
        time.sleep(0.01)  # polling interval of a bounded wait, not a wait for state


def submit(client: TestClient, **kwargs: Any) -> Any:
    """POST /api/predict/async; asserts 202 and returns the answer."""
    response = client.post("/api/predict/async", **kwargs)
    assert response.status_code == 202, response.text
    return response.json()
