"""The connection's admission at overload (mlserve.server.shedding.Shedder) counts the
prediction requests it let in whose tasks have not started yet: the requests read in one
event-loop turn are not all judged against the same queue (docs/benchmarks.md, "Fourth
pass"). Against a real server: tests/faults/test_overload_budget.py, test_overload_batches.py.
"""

from __future__ import annotations

from typing import Any

from mlserve.runtime.batcher import Batcher, BatchingConfig
from mlserve.server.ids import RequestIds
from mlserve.server.shedding import RESERVED_KEY, Shedder
from mlserve.serving.metrics import ServerMetrics

CALL_S = 0.2  # the model's observed time per call
BUDGET_MS = 1100.0  # five calls and a half


class OneModel:
    """ModelManager.saturated over one batcher."""

    def __init__(self, batcher: Batcher[Any]) -> None:
        self.batcher = batcher

    def saturated(self, name: str | None = None, *, batch: bool = False, ahead: int = 0) -> bool:
        rows = self.batcher.recent_rows if batch else 1
        return not self.batcher.would_admit(rows, ahead=ahead)


def timed_batcher() -> Batcher[Any]:
    """An idle batcher, one row a call, whose calls were seen to take CALL_S."""
    batcher: Batcher[Any] = Batcher(
        lambda rows: rows,
        config=BatchingConfig(max_batch_size=1, max_queue_delay_ms=BUDGET_MS),
        name="timed:1",
    )
    batcher.cost.observe(1, CALL_S)
    return batcher


def let_in(shedder: Shedder, path: bytes, scope: dict[str, Any]) -> bool:
    answer = shedder.refusal(
        path, [], keep_alive=True, default_headers=[], started=0.0, scope=scope
    )
    if answer is not None:
        assert answer.startswith(b"HTTP/1.1 503 ")
    return answer is None


def test_requests_let_in_count_as_queued_until_their_tasks_start() -> None:
    shedder = Shedder(OneModel(timed_batcher()), ServerMetrics(), RequestIds())  # type: ignore[arg-type]
    scopes: list[dict[str, Any]] = [{} for _ in range(8)]
    admitted = [let_in(shedder, b"/api/predict", scope) for scope in scopes]
    # The queue is empty, but each request let in is ahead of the next: 1 + 4 more fit the
    # budget (5 calls of 0.2 s), the rest are refused at once.
    assert admitted == [True] * 5 + [False] * 3
    assert shedder.reserved == 5
    assert [RESERVED_KEY in scope for scope in scopes] == [True] * 5 + [False] * 3

    shedder.release(scopes[0])  # its task started (and queued its row, or not)
    shedder.release(scopes[0])  # given back once only
    assert shedder.reserved == 4
    assert let_in(shedder, b"/api/predict", {})
    assert not let_in(shedder, b"/api/predict", {})

    # What is not a prediction reserves nothing.
    assert let_in(shedder, b"/api/models", scope := {})
    assert RESERVED_KEY not in scope and shedder.reserved == 5


def test_a_batch_request_is_judged_by_the_rows_of_recent_requests() -> None:
    batcher = timed_batcher()
    assert batcher.recent_rows == 1  # nothing seen yet: one row
    for rows in (10, 12, 10):
        batcher._recent.append(rows)  # what _enqueue notes of each submission
    assert batcher.recent_rows == 10
    shedder = Shedder(OneModel(batcher), ServerMetrics(), RequestIds())  # type: ignore[arg-type]
    # Idle: one batch is let in however large; the next would wait for 10 calls of 0.2 s.
    assert let_in(shedder, b"/api/predict/batch", {})
    assert not let_in(shedder, b"/api/predict/batch", {})
    # A single text is judged by one row, behind the batch let in (counted as 10 rows).
    assert not let_in(shedder, b"/api/predict", {})
    batcher._recent.append(1)  # a one-row request seen: batches are judged by one row
    assert let_in(shedder, b"/api/predict", {})
