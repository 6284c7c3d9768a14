"""Hot swaps under continuous load against a real `mlserve serve`: zero failed requests."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

FLOWER = [6.7, 3.0, 5.2, 2.3]
WORKERS = 8
SWAPS = 6
MAX_REQUESTS = 60_000  # bounds the load whatever the machine's speed
SWAP_DEADLINE_S = 20.0


@pytest.fixture
def server(
    tmp_path: Path, iris: tuple[Any, Any], start_server: Callable[..., MlserveProcess]
) -> tuple[str, Registry]:
    """`python -m mlserve serve` over iris:1 (production) and iris:2, watching every 0.2 s."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        LogisticRegression(max_iter=1000).fit(x, y),
        name="iris",
        aliases=["production"],
        feature_names=IRIS_FEATURES,
    )
    registry.register_estimator(
        DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y),
        name="iris",
        feature_names=IRIS_FEATURES,
    )
    env = {"MLSERVE_TRAFFIC__WATCH_INTERVAL_S": "0.2", "MLSERVE_LOGGING__ACCESS_LOG": "false"}
    proc = start_server(registry.root, env=env, log_level="info")
    proc.wait_ready()
    return proc.url, registry


class Load:
    """WORKERS threads, each with one keep-alive connection, predicting until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.versions: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []
        self.total = 0
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]

    def _work(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/api/predict", json={"features": FLOWER})
                except httpx.HTTPError as exc:
                    failure: str | None = f"{type(exc).__name__}: {exc}"
                    version = None
                else:
                    ok = response.status_code == 200
                    failure = None if ok else f"{response.status_code} {response.text}"
                    version = response.json()["version"] if ok else None
                with self.lock:
                    self.total += 1
                    if failure is not None:
                        self.failures.append(failure)
                    if version is not None:
                        self.versions[version] += 1
                    if self.total >= MAX_REQUESTS:
                        self.stop.set()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def _serving(url: str) -> int:
    return int(httpx.post(f"{url}/api/predict", json={"features": FLOWER}).json()["version"])


def test_swapping_versions_under_continuous_load_fails_no_request(
    server: tuple[str, Registry],
) -> None:
    url, registry = server
    moves = []
    with Load(url) as load:
        time.sleep(0.3)  # a load window before the first swap
        for i in range(SWAPS):
            target = 2 if i % 2 == 0 else 1
            # What `mlserve models alias iris N production` does (tested in tests/cli), from
            # this process: the server only sees the registry change on disk.
            registry.set_alias("iris", "production", target)
            if i % 4 == 1:  # some swaps forced at once, the others left to the watcher
                reloaded = httpx.post(f"{url}/api/models/iris/reload", timeout=10)
                assert reloaded.status_code == 200, reloaded.text
            started = time.monotonic()
            while _serving(url) != target:
                assert time.monotonic() - started < SWAP_DEADLINE_S, f"swap {i} never landed"
                time.sleep(0.02)  # poll interval of a bounded wait
            moves.append(round(time.monotonic() - started, 3))
            time.sleep(0.3)  # load keeps running across the swap and its old version's drain
            assert not load.stop.is_set(), "request budget spent before the swaps were done"

    assert load.failures == [], load.failures[:5]
    assert load.versions[1] > 0 and load.versions[2] > 0, load.versions
    assert load.total >= 200, load.total
    metrics = httpx.get(f"{url}/metrics").text
    swaps = [line for line in metrics.splitlines() if line.startswith("mlserve_model_swaps_total")]
    assert swaps == [f'mlserve_model_swaps_total{{model="iris"}} {float(SWAPS)}'], swaps
