"""Helpers for the traffic-control tests (cache, splits, shadow, watcher, breaker). FLOWERS,
Clock, scrape and value come from tests/support and stay importable from here."""

from __future__ import annotations

from typing import Any

from support.clock import Clock
from support.data import FLOWERS, IRIS_FEATURES
from support.metrics import scrape, value

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

# Through the fast path (plain request) and through the FastAPI route (an Origin header makes
# the fast path hand the request over; no CORS origins are configured, so nothing else changes).
PATHS = {"fast": {}, "route": {"Origin": "http://client.example"}}


def tree_version(registry: Registry, iris: tuple[Any, Any], **kwargs: Any) -> ModelMetadata:
    """Another iris version: a shallow decision tree (answers differ from the logistic one)."""
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)
    return registry.register_estimator(tree, name="iris", feature_names=IRIS_FEATURES, **kwargs)


__all__ = ["FLOWERS", "PATHS", "Clock", "scrape", "tree_version", "value"]
