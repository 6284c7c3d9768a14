"""Moved to tests/support (data, servers, net, metrics). What is left re-exports the names that
tests/faults/test_registry_faults.py still imports from here; import them from `support`."""

from support.data import IRIS_FEATURES, iris_estimator, populate

__all__ = ["IRIS_FEATURES", "iris_estimator", "populate"]
