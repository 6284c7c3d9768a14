"""Test-only estimators whose failures carry internals (a path, a token) in their messages:
none of it may reach a client. Importable when a server unpickles them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

SECRET_PATH = "/srv/secret/models/internal.py"
SECRET_TOKEN = "token=hunter2"
SECRET = f"{SECRET_PATH} {SECRET_TOKEN}"


class UnloadableClassifier(LogisticRegression):
    """Fits and pickles like a LogisticRegression; unpickling it raises with internals."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError(f"cannot open {SECRET}")


class FailingClassifier(LogisticRegression):
    """Loads fine; every prediction raises with internals in the message."""

    def predict(self, x: Any) -> Any:
        raise OSError(2, f"No such file or directory: '{SECRET_PATH}' ({SECRET_TOKEN})")

    def predict_proba(self, x: Any) -> Any:
        raise OSError(2, f"No such file or directory: '{SECRET_PATH}' ({SECRET_TOKEN})")


def fitted(cls: type[LogisticRegression]) -> Any:
    from sklearn.datasets import load_iris

    data = load_iris()
    x = np.asarray(data.data)
    return cls(max_iter=1000).fit(x, data.target_names[data.target])
