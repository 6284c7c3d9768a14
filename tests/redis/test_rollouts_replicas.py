"""A rollout driven by replicas sharing one Redis and one registry: the replica holding the
lease is killed mid-rollout, another takes the lease over and resumes from the stored step
(never repeating one), a replacement replica follows, and the candidate is promoted."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.servers import MlserveProcess, serve
from support.wait import wait_for

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

from mlserve.registry import Registry  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.redis]

STEPS = [20, 40, 60, 100]
WAIT_S = 90.0


class Load:
    """Predictions for `good` from two clients spread over the live replicas, until stopped;
    answers from replicas that are still in the list are all expected to be 200."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(urls)
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ids = itertools.count()
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]

    def drop(self, url: str) -> None:
        with self.lock:
            self.urls.remove(url)

    def add(self, url: str) -> None:
        with self.lock:
            self.urls.append(url)

    def run(self) -> None:
        deadline = time.monotonic() + WAIT_S * 2
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                i = next(self.ids)
                with self.lock:
                    url = self.urls[i % len(self.urls)]
                try:
                    answer = http.post(
                        url + "/api/predict",
                        json={"model": "good", "text": "great service"},
                        headers={"X-Client-ID": f"c{i}"},
                    )
                except httpx.TransportError:
                    with self.lock:
                        if url in self.urls:  # a replica that should be up did not answer
                            self.statuses[0] += 1
                    continue
                with self.lock:
                    if url in self.urls:
                        self.statuses[answer.status_code] += 1
                        if answer.status_code == 200:
                            self.versions[answer.json()["version"]] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    from support.data import text_estimator

    registry = Registry(tmp_path / "registry")  # the shared volume
    registry.register_estimator(text_estimator(), name="good", aliases=["production"])
    registry.register_estimator(text_estimator(), name="good")
    return registry


@dataclass
class Replicas:
    start: Callable[[str], MlserveProcess]
    procs: list[MlserveProcess]


@pytest.fixture
def replicas(
    registry: Registry, tmp_path: Path, redis_url: str, key_prefix: str
) -> Iterator[Replicas]:
    env = {
        "MLSERVE_REDIS__URL": redis_url,
        "MLSERVE_REDIS__KEY_PREFIX": key_prefix,
        "MLSERVE_TRAFFIC__ROLLOUT_INTERVAL_S": "0.2",  # a lease lasts 1 s
        "MLSERVE_TRAFFIC__WATCH_INTERVAL_S": "0.5",
        "MLSERVE_LOGGING__LEVEL": "info",
    }
    procs: list[MlserveProcess] = []

    def start(name: str) -> MlserveProcess:
        proc = serve(registry.root, tmp_path / name, env=env, log_level=None, name=name)
        procs.append(proc)
        proc.wait_ready()
        return proc

    try:
        yield Replicas(start, procs)
    finally:
        for proc in procs:
            proc.stop()


def driver_of(step: int, candidates: list[MlserveProcess]) -> MlserveProcess | None:
    """The replica that logged moving the rollout to `step` (0-based), if any."""
    pattern = re.compile(rf"rollout of good:2: step {step + 1},")
    found = [p for p in candidates if pattern.search(p.output())]
    return found[0] if found else None


def test_a_killed_driver_is_replaced_and_no_step_is_repeated(replicas: Replicas) -> None:
    a, b = replicas.start("replica-a"), replicas.start("replica-b")
    started = a.put_json(
        "/api/models/good/rollout",
        {"candidate": 2, "steps": STEPS, "step_seconds": 1.5, "min_requests": 10},
    )
    assert started.status_code == 201, started.text

    with Load([a.url, b.url]) as load:
        # Whoever moved the rollout to its second step holds the lease: kill it mid-step.
        driver = wait_for(
            lambda: driver_of(1, [a, b]),
            "a replica moved the rollout to step 2",
            WAIT_S,
            details=lambda: a.output()[-2000:] + b.output()[-2000:],
        )
        survivor = b if driver is a else a
        load.drop(driver.url)
        driver.process.kill()
        driver.process.wait(timeout=10)
        replacement = replicas.start("replica-c")  # as a Deployment would start one
        load.add(replacement.url)
        final = wait_for(
            lambda: (
                (r := survivor.get("/api/models/good/rollout").json())["status"] != "running" and r
            ),
            "the rollout ended",
            WAIT_S,
            details=lambda: survivor.output()[-3000:] + replacement.output()[-3000:],
        )

    assert final["status"] == "promoted", final
    events = [(e["event"], e["step"]) for e in final["events"]]
    assert events == [("started", 0), ("step", 1), ("step", 2), ("step", 3), ("promoted", 3)]
    assert driver_of(3, [survivor, replacement]) is not None  # a live replica went on
    assert load.statuses[0] == 0 and set(load.statuses) == {200}, load.statuses
    assert load.versions[1] > 0 and load.versions[2] > 0
    for replica in (survivor, replacement):
        assert replica.get("/api/models/good/rollout").json()["status"] == "promoted"
        wait_for(
            lambda r=replica: r.get("/api/models/good").json()["version"] == 2,  # type: ignore[misc]
            f"{replica.name} serves the promoted version",
            10,
        )
        assert replica.get("/api/models/good").json()["all_aliases"]["production"] == 2
