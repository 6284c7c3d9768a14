"""Test-only estimators for the forked workers' tests, importable when a server unpickles them."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class _Constant(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, x: Any, y: Any) -> _Constant:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return np.full(len(x), self.classes_[0])


class CountsLoads(_Constant):
    """Appends the pid of every process that unpickles it to the file `log_path`."""

    def __init__(self, log_path: str = "") -> None:
        self.log_path = log_path

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")


class DiesInTheLoader(_Constant):
    """Loaded by a server's model loader (a worker thread: unpickled, or measured as a loaded
    model is), it kills its process, as a crash in native code or the kernel's OOM killer
    would. On a main thread (a supervisor reading the models before it forks its workers) it
    loads as any model."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        _die_in_a_loader()
        super().__setstate__(state)

    def __sizeof__(self) -> int:
        _die_in_a_loader()
        return sys.getsizeof(self.__dict__) + object.__sizeof__(self)


def _die_in_a_loader() -> None:
    if threading.current_thread() is not threading.main_thread():
        os.kill(os.getpid(), signal.SIGKILL)
