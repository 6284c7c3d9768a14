"""Test-only estimators, importable by joblib when the server unpickles them."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

# Gates a GatedClassifier blocks on, by name. An unpickled copy finds its gate here, so a test
# can hold a prediction in flight and release it when it chooses.
GATES: dict[str, Gate] = {}

# What a failing estimator puts in its exception: none of it may reach a client.
SECRET_DETAIL = "/srv/secret/models/internal.py token=hunter2"


class Gate:
    """`entered` is set when a prediction starts; the prediction waits for `release`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


class _Fitted(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, x: Any, y: Any) -> _Fitted:
        x = np.asarray(x, dtype=float)
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        return self


class BrokenClassifier(_Fitted):
    """predict and predict_proba always raise, with internals in the message."""

    def predict(self, x: Any) -> Any:
        raise RuntimeError(f"segfault-ish failure in {SECRET_DETAIL}")

    def predict_proba(self, x: Any) -> Any:
        raise RuntimeError(f"segfault-ish failure in {SECRET_DETAIL}")


class PoisonableClassifier(_Fitted):
    """Predicts classes_[0]; raises for the whole call when any row's first value is `poison`."""

    def __init__(self, poison: float = -999.0) -> None:
        self.poison = poison

    def predict(self, x: Any) -> Any:
        x = np.asarray(x, dtype=float)
        if (x[:, 0] == self.poison).any():
            raise ValueError(f"poisoned row in {SECRET_DETAIL}")
        return np.full(len(x), self.classes_[0])


class GatedClassifier(_Fitted):
    """Predicts classes_[0] after waiting for its gate (a test holds predictions in flight);
    with `fail`, a call that waited for the gate raises instead."""

    def __init__(self, gate: str = "", fail: bool = False) -> None:
        self.gate = gate
        self.fail = fail

    def predict(self, x: Any) -> Any:
        gate = GATES.get(self.gate)
        if gate is not None:
            gate.entered.set()
            if not gate.release.wait(timeout=30):
                raise TimeoutError("gate never released")
            if self.fail:
                raise RuntimeError("the model's backend is down")
        return np.full(len(np.asarray(x)), self.classes_[0])


class SlowClassifier(_Fitted):
    """Predicts classes_[0] after sleeping `delay_s`: every prediction takes at least that long."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def predict(self, x: Any) -> Any:
        time.sleep(self.delay_s)
        return np.full(len(np.asarray(x)), self.classes_[0])
