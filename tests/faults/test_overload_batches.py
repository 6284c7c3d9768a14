"""Overload by batch requests against a real server (issue 18, docs/benchmarks.md "Fourth
pass"): a batch request is judged by the rows the model's recent requests carried, so that
under an overload of batches it is refused by the connection before its body is read (not
parsed, validated and refused by the route); and refusals by the model's queue are summed up
in the log, not logged one line each. (The reservation of places for requests let in:
tests/server/test_shed_reservations.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from .test_overload_budget import (
    FLOWER,
    assert_refused,
    busy,
    first_refusal,
    post,
    slow_server,
)

pytestmark = pytest.mark.slow

ROWS = 10  # rows of a batch: with one row a call (0.2 s each) far over the 1 s budget when queued
BATCH = {"records": [FLOWER] * ROWS}
MALFORMED = {
    "content": b'{"records": [[5.1, 3.5, 1.4, 0.2]], not json',
    "headers": {"content-type": "application/json"},
}


def post_batch(url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as own:
        response = own.post("/api/predict/batch", **kwargs)  # type: ignore[arg-type]
    return response, time.perf_counter() - started


def test_under_an_overload_of_batches_a_batch_is_refused_before_its_body_is_read(
    tmp_path: Path,
) -> None:
    """Two clients sending batches of ROWS keep one batch queued. The model is priced by
    rows (one row a call): behind it a one-row request would wait 11 calls (2.2 s), within
    the 3 s budget, a batch 20 calls (4 s), over it. A malformed batch (422 when there is
    room) gets the connection's 503, so the decision came before the body was parsed."""
    with slow_server(tmp_path, budget_ms=3000) as server:
        assert post_batch(server.url, json=BATCH)[0].status_code == 200
        assert post_batch(server.url, **MALFORMED)[0].status_code == 422  # room: parsed

        with busy(server.url, "/api/predict/batch", BATCH):
            shed = first_refusal(lambda: post_batch(server.url, **MALFORMED), attempts=60)
        assert shed is not None, "a batch was never refused before its body was read"
        assert_refused(*shed)


def test_refusals_by_the_model_queue_are_summed_up_in_the_log(tmp_path: Path) -> None:
    """Two clients sending one row keep one row queued, which lets batches in at the
    connection (judged by one row), and the model's queue refuses them once their ROWS rows
    are known: each refusal is a 503 with the error shape, and the log has the summary line,
    not a WARNING per refusal."""
    with slow_server(tmp_path) as server:
        assert post(server.url, json={"features": FLOWER})[0].status_code == 200
        refused = 0
        with busy(server.url, "/api/predict", {"features": FLOWER}):
            for _ in range(100):  # bounded: a row is queued nearly all the time
                response, seconds = post_batch(server.url, json=BATCH)
                if response.status_code == 503:
                    assert_refused(response, seconds)
                    refused += 1
                    if refused == 5:
                        break
                else:
                    assert response.status_code == 200, response.text
                    time.sleep(0.05)
        log = server.output()
    assert refused == 5, "the batches were never refused"
    assert "overloaded: refused" in log
    assert "would answer in about" not in log  # the refusal's own message, once a line each
