"""A test-only estimator that fails on command, importable by joblib when the server loads it."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

# Switches by name: while FAILING[name] is true the model raises; CALLS[name] counts its calls.
FAILING: dict[str, bool] = {}
CALLS: dict[str, int] = {}


class FlakyClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts classes_[0], or raises while its switch is on; counts every call."""

    def __init__(self, switch: str = "") -> None:
        self.switch = switch

    def fit(self, x: Any, y: Any) -> FlakyClassifier:
        x = np.asarray(x, dtype=float)
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        CALLS[self.switch] = CALLS.get(self.switch, 0) + 1
        if FAILING.get(self.switch):
            raise RuntimeError("the model's backend is down")
        return np.full(len(np.asarray(x)), self.classes_[0])
