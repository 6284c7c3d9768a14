"""Test-only estimators a server process unpickles from the registry (the tests folder is on
its PYTHONPATH): a model whose loading waits on a file a test controls."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sklearn.linear_model import LogisticRegression

HOLD_TIMEOUT_S = 120.0


class SlowLoadingClassifier(LogisticRegression):
    """A LogisticRegression whose unpickling announces itself in `gate_dir_`/loading-<pid>, then
    waits while `gate_dir_`/hold exists: a test holds a server in the middle of loading it
    (and kills it there) without any model that is slow for real."""

    gate_dir_: str

    def __setstate__(self, state: dict[str, Any]) -> None:
        gate = Path(state.get("gate_dir_", ""))
        if state.get("gate_dir_") and gate.is_dir():
            (gate / f"loading-{os.getpid()}").write_text("")
            deadline = time.monotonic() + HOLD_TIMEOUT_S
            while (gate / "hold").exists():  # a test-only model pacing itself on a file
                if time.monotonic() > deadline:
                    raise TimeoutError("hold file never removed")
                time.sleep(0.01)
        super().__setstate__(state)


def slow_loading(x: Any, y: Any, gate_dir: Path) -> SlowLoadingClassifier:
    model = SlowLoadingClassifier(max_iter=1000).fit(x, y)
    model.gate_dir_ = str(gate_dir)
    return model
