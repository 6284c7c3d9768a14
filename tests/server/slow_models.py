"""Test-only estimators for real-process job tests, importable when a server unpickles them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

HOLD_TIMEOUT_S = 120.0


class FileGatedRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts 2·x0 + x1, so each answer tells which input row it belongs to.

    Every call appends "pid first_x0 rows" to `gate_dir`/calls.log. A call holding a row whose
    x0 is at least `hold_from` waits while the file `gate_dir`/hold exists: a test (in another
    process) holds a job mid-chunk, kills the server, and lets a new one go on."""

    def __init__(self, gate_dir: str = "", hold_from: float = float("inf")) -> None:
        self.gate_dir = gate_dir
        self.hold_from = hold_from

    def fit(self, x: Any, y: Any) -> FileGatedRegressor:
        self.n_features_in_ = np.asarray(x, dtype=float).shape[1]
        return self

    def predict(self, x: Any) -> Any:
        x = np.asarray(x, dtype=float)
        gate = Path(self.gate_dir)
        with (gate / "calls.log").open("a") as log:
            log.write(f"{os.getpid()} {x[0, 0]:g} {len(x)}\n")
        if (x[:, 0] >= self.hold_from).any():
            deadline = time.monotonic() + HOLD_TIMEOUT_S
            while (gate / "hold").exists():  # a test-only model pacing itself on a file
                if time.monotonic() > deadline:
                    raise TimeoutError("hold file never removed")
                time.sleep(0.01)
        return x[:, 0] * 2 + x[:, 1]


def calls(gate_dir: Path) -> list[tuple[int, float, int]]:
    """(pid, first x0, rows) of every predict call so far."""
    path = gate_dir / "calls.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, x0, rows = line.split()
        out.append((int(pid), float(x0), int(rows)))
    return out
