"""Overload against a real server with the latency budget (batching.max_queue_delay_ms): a
burst far beyond what a slow model answers within the budget is refused at once with 503,
Retry-After and the error shape, before the body is even read, while what is admitted is
answered within the budget (plus slack for a noisy machine), not after the whole burst (12 s).
(The admission rule itself: tests/runtime/test_batcher_admission.py; figures: bench/overload.py.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server.broken_models import SlowClassifier
from support.data import IRIS_FEATURES
from support.metrics import value
from support.servers import MlserveProcess, running

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

CALL_S = 0.2  # the model's time per call
BUDGET_MS = 1000  # about 5 calls
BURST = 60  # 12 s of work, one row a call: far over the budget
SLACK_S = 4.0
FAST_S = 4.0  # a refusal, client threads included; generous for a busy machine
FLOWER = [5.1, 3.5, 1.4, 0.2]


def post(url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as own:
        response = own.post("/api/predict", **kwargs)
    return response, time.perf_counter() - started


def assert_refused(response: httpx.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == "overloaded"
    assert error["request_id"] == response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) >= 1
    assert seconds < FAST_S, seconds


@contextlib.contextmanager
def slow_server(tmp_path: Path, budget_ms: float = BUDGET_MS) -> Iterator[MlserveProcess]:
    """A real server over one model taking CALL_S per call, one request a call, and the given
    latency budget (batching.max_queue_delay_ms)."""
    root = tmp_path / "registry"
    x = np.random.default_rng(0).normal(size=(20, 4))
    Registry(root).register_estimator(
        SlowClassifier(delay_s=CALL_S).fit(x, np.arange(20) % 2),
        name="slow",
        aliases=["production"],
        feature_names=IRIS_FEATURES,
        check=False,
    )
    config = {
        "batching": {"max_batch_size": 1, "max_queue_delay_ms": budget_ms},
        "traffic": {"watch_interval_s": 0},
    }
    with running(root, tmp_path / "home", config=config) as server:
        yield server


@contextlib.contextmanager
def busy(url: str, path: str, body: object, clients: int = 2) -> Iterator[None]:
    """`clients` threads posting `body` to `path` non-stop (at most 30 s) during the block."""
    stop = threading.Event()

    def keep_busy() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                http.post(path, json=body)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(keep_busy)
        try:
            yield
        finally:
            stop.set()


def saturated(url: str, clients: int = 16) -> contextlib.AbstractContextManager[None]:
    """`clients` threads predicting non-stop (at most 30 s) for the duration of the block:
    the slow model's queue stays over its budget nearly all the time."""
    return busy(url, "/api/predict", {"features": FLOWER}, clients)


def test_a_burst_beyond_the_latency_budget_is_refused_fast_and_the_rest_answered_in_time(
    tmp_path: Path,
) -> None:
    with (
        slow_server(tmp_path) as server,
        concurrent.futures.ThreadPoolExecutor(BURST) as pool,
    ):
        body = {"features": FLOWER}
        warm, _ = post(server.url, json=body)  # one timed call: the server knows the pace
        assert warm.status_code == 200, warm.text

        burst = [pool.submit(post, server.url, json=body) for _ in range(BURST)]
        outcomes = [f.result(120) for f in burst]

        answered = [s for r, s in outcomes if r.status_code == 200]
        refused = [(r, s) for r, s in outcomes if r.status_code != 200]
        assert answered, "nothing admitted"
        assert len(refused) >= BURST // 2, [r.status_code for r, _ in outcomes]
        for response, seconds in refused:
            assert_refused(response, seconds)
        # Admitted requests wait about the budget, not the burst (12 s).
        assert max(answered) < BUDGET_MS / 1000 + SLACK_S, sorted(answered)


def test_while_overloaded_a_prediction_is_refused_before_its_body_is_read(
    tmp_path: Path,
) -> None:
    """A malformed body (a 422 when there is room) gets the 503: the decision came first."""
    malformed = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    with slow_server(tmp_path) as server:
        assert post(server.url, json={"features": FLOWER})[0].status_code == 200
        assert post(server.url, **malformed)[0].status_code == 422  # room: parsed, refused

        with saturated(server.url):
            shed = first_refusal(lambda: post(server.url, **malformed), attempts=50)
        assert shed is not None, "never refused before parsing"
        assert_refused(*shed)


def first_refusal(
    send: Callable[[], tuple[httpx.Response, float]], attempts: int
) -> tuple[httpx.Response, float] | None:
    """Send a malformed request until the server refuses it (503) before reading its body, at
    most `attempts` times (bounded: the queue is over budget nearly all the time); every other
    answer is the 422 of a body that was read."""
    for _ in range(attempts):
        response, seconds = send()
        if response.status_code == 503:
            return response, seconds
        assert response.status_code == 422, response.text
        time.sleep(0.05)
    return None


def read_answer(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, what followed) of one HTTP answer read from `sock`."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return head, rest[:length], rest[length:]


def test_refusals_are_answered_by_the_connection_which_stays_open(tmp_path: Path) -> None:
    """While saturated, a raw-socket client's predictions get 503 before their (malformed)
    body is parsed, on one kept-alive connection; each is counted in the request metrics, and
    the log says so in one line, not one line per refusal."""
    body = b"{not json"
    request = (
        b"POST /api/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-request-id: raw-client-1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with slow_server(tmp_path) as server:
        assert post(server.url, json={"features": FLOWER})[0].status_code == 200

        answers: list[tuple[bytes, bytes]] = []
        with (
            saturated(server.url),
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
        ):
            for _ in range(200):  # bounded: saturated nearly all the time
                sock.sendall(request)
                head, answer, extra = read_answer(sock)
                assert not extra
                if head.startswith(b"HTTP/1.1 503"):
                    answers.append((head, answer))
                    if len(answers) == 5:
                        break
                else:
                    assert head.startswith(b"HTTP/1.1 422"), head
                    time.sleep(0.05)
            # The same connection still serves (a GET, never shed).
            sock.sendall(b"GET /api/live HTTP/1.1\r\nhost: x\r\n\r\n")
            live_head, _, _ = read_answer(sock)
        metrics = server.metrics()
        log = server.output()

    assert len(answers) == 5, "never refused"
    for head, answer in answers:
        assert b"retry-after: 1" in head.lower()
        assert b"connection: close" not in head.lower()
        assert b"x-request-id: raw-client-1" in head.lower()
        error = json.loads(answer)["error"]
        assert error == {"code": "overloaded", "message": error["message"],
                         "request_id": "raw-client-1"}  # fmt: skip
        assert "batching.max_queue_delay_ms" in error["message"]
    assert live_head.startswith(b"HTTP/1.1 200")
    refused = value(metrics, "mlserve_http_requests_total", method="POST", route="/api/predict",
                    status="503")  # fmt: skip
    assert refused >= 5
    assert "overloaded: refused" in log
    assert log.count("POST /api/predict 503") < 5  # no access-log line per refusal
