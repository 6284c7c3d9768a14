"""Two `mlserve serve` replicas and one `mlserve worker` sharing one Redis and one registry:
jobs, rate limits and alias changes behave as one service."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import iris
from support.redis import SKIP_REASON, TEST_REDIS_URL, delete_prefixed
from support.servers import MlserveProcess, serve, start_worker
from support.wait import wait_for

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")
pytest.importorskip("celery", reason="the mlserve-sklearn[redis] extra is not installed")

from mlserve.keys import KeyStore
from mlserve.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WATCH_S = 1.0
PREDICT_BURST = 6
WAIT_S = 60.0


@dataclass
class Deployment:
    a: MlserveProcess
    b: MlserveProcess
    worker: MlserveProcess
    registry: Path
    admin: str
    predict: str
    estimators: dict[int, Any]
    x: Any

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.output()[-4000:]}" for p in (self.a, self.b, self.worker)
        )

    def client(self, replica: MlserveProcess, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=replica.url, timeout=10, headers={"Authorization": f"Bearer {key}"}
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if TEST_REDIS_URL is None:
        pytest.skip(SKIP_REASON)
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    root = tmp_path_factory.mktemp("scale-out")
    x, y = iris()
    estimators = {
        1: LogisticRegression(max_iter=1000).fit(x, y),
        2: DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y),
    }
    registry = Registry(root / "registry")  # the shared volume
    registry.register_estimator(estimators[1], name="iris", aliases=["production"])
    registry.register_estimator(estimators[2], name="iris")
    home = root / "home"  # one key file for both replicas, as on a shared volume
    keys = KeyStore(home / "state" / "keys.json")
    admin = keys.create(role="admin", name="ops").key
    predict = keys.create(role="predict", name="client").key

    prefix = f"mlst-{uuid.uuid4().hex[:10]}:"
    settings = {
        "MLSERVE_REDIS__URL": TEST_REDIS_URL,
        "MLSERVE_REDIS__KEY_PREFIX": prefix,
        "MLSERVE_REDIS__HEALTH_CHECK_INTERVAL_S": "0.5",
        "MLSERVE_RATE_LIMIT__ENABLED": "true",
        "MLSERVE_RATE_LIMIT__RATE": "1000",
        "MLSERVE_RATE_LIMIT__BURST": "1000",
        "MLSERVE_RATE_LIMIT__ROLES": json.dumps(
            {"predict": {"rate": 0.01, "burst": PREDICT_BURST}}
        ),
        "MLSERVE_TRAFFIC__WATCH_INTERVAL_S": str(WATCH_S),
        "MLSERVE_CACHE__ENABLED": "true",
        "MLSERVE_JOBS__CHUNK_SIZE": "20",
        "MLSERVE_JOBS__LEASE_S": "5",
        "MLSERVE_JOBS__TTL_S": "600",
        "MLSERVE_LOGGING__LEVEL": "info",
    }
    procs: list[MlserveProcess] = []
    try:
        for name in ("a", "b"):
            procs.append(
                serve(registry.root, home, env=settings, log_level=None, name=f"replica-{name}")
            )
        procs.append(start_worker(registry.root, home, env=settings))
        for proc in procs[:2]:
            proc.wait_ready()
        procs[2].wait_log("ready.")  # Celery: consuming the queue
        yield Deployment(*procs, registry.root, admin, predict, estimators, x)  # type: ignore[call-arg]
    finally:
        for proc in procs:
            proc.terminate()
        delete_prefixed(TEST_REDIS_URL, prefix)


def test_a_job_submitted_to_a_is_read_from_b_and_completed_by_the_worker(
    deployment: Deployment,
) -> None:
    d = deployment
    with d.client(d.a, d.admin) as a, d.client(d.b, d.admin) as b:
        accepted = a.post("/api/predict/async", json={"model": "iris", "records": d.x.tolist()})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        seen = b.get(f"/api/jobs/{job_id}")
        finished = wait_for(
            lambda: (j := b.get(f"/api/jobs/{job_id}").json())["status"] == "completed" and j,
            "the job completed",
            WAIT_S,
            details=d.logs,
        )
        lines = a.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})

    assert seen.status_code == 200
    assert seen.json()["progress"]["total"] == len(d.x)
    assert finished["progress"] == {"done": len(d.x), "total": len(d.x)}
    version = accepted.json()["version"]
    predictions = [json.loads(line)["prediction"] for line in lines.text.splitlines()]
    assert predictions == list(d.estimators[version].predict(d.x))
    assert f"job {job_id}: completed" in d.worker.output()
    for replica in (d.a, d.b):
        assert f"job {job_id}: completed" not in replica.output()  # scored by the worker only


def test_a_keys_rate_limit_is_shared_by_both_replicas(deployment: Deployment) -> None:
    d = deployment
    body = {"model": "iris", "features": d.x[0].tolist()}
    with d.client(d.a, d.predict) as a, d.client(d.b, d.predict) as b:
        answers = [(a if i % 2 else b).post("/api/predict", json=body) for i in range(10)]

    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == PREDICT_BURST, statuses  # the burst, across both replicas
    assert statuses == [200] * PREDICT_BURST + [429] * (10 - PREDICT_BURST)
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:PREDICT_BURST]] == [
        str(PREDICT_BURST - 1 - i) for i in range(PREDICT_BURST)
    ]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_an_answer_cached_by_a_is_a_hit_on_b(deployment: Deployment) -> None:
    d = deployment
    body = {"model": "iris", "features": [6.1, 2.8, 4.7, 1.2]}
    with d.client(d.a, d.admin) as a, d.client(d.b, d.admin) as b:
        first = a.post("/api/predict", json=body)
        second = b.post("/api/predict", json=body)

    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.json()["prediction"] == first.json()["prediction"]
    assert second.json()["version"] == first.json()["version"]


def test_an_alias_promoted_through_a_is_served_by_b_within_the_watch_interval(
    deployment: Deployment,
) -> None:
    d = deployment
    body = {"model": "iris", "features": d.x[0].tolist()}
    with d.client(d.a, d.admin) as a, d.client(d.b, d.admin) as b:
        assert b.post("/api/predict", json=body).json()["version"] == 1
        # A's admin endpoint changes the shared registry and reloads A at once.
        promoted = a.put("/api/models/iris/aliases/production", json={"version": 2})
        swapped_at = time.monotonic()
        served_by_a = a.post("/api/predict", json=body).json()["version"]
        wait_for(
            lambda: b.post("/api/predict", json=body).json()["version"] == 2,
            "replica b serving iris:2",
            WAIT_S,
            details=d.logs,
        )
        took = time.monotonic() - swapped_at

    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["serving_version"] == 2
    assert served_by_a == 2
    # B's watcher checks every WATCH_S; allow one interval plus its poll of 0.1 s and slack
    # for a loaded 2-core machine (the model load itself).
    assert took <= WATCH_S + 1.5, f"replica b took {took:.1f} s (watch interval {WATCH_S} s)"
    assert "watch: iris now serves version 2" in d.b.output()
