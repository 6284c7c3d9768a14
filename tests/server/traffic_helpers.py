"""Helpers for the traffic-control tests (cache, splits, shadow, watcher, breaker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from .conftest import IRIS_FEATURES

FLOWERS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
    [6.3, 2.9, 5.6, 1.8],
    [4.9, 3.0, 1.4, 0.2],
]
# Through the fast path (plain request) and through the FastAPI route (an Origin header makes
# the fast path hand the request over; no CORS origins are configured, so nothing else changes).
PATHS = {"fast": {}, "route": {"Origin": "http://client.example"}}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def scrape(client: TestClient) -> dict[str, list[Any]]:
    response = client.get("/metrics")
    assert response.status_code == 200
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


def tree_version(registry: Registry, iris: tuple[Any, Any], **kwargs: Any) -> ModelMetadata:
    """Another iris version: a shallow decision tree (answers differ from the logistic one)."""
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)
    return registry.register_estimator(tree, name="iris", feature_names=IRIS_FEATURES, **kwargs)


def poll(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for `condition` with a deadline (polling, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
