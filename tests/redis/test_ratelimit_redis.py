"""Rate limits in Redis: one token bucket per client shared by every replica; Redis down."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

from mlserve.config import load_settings
from mlserve.ratelimit import Limit
from mlserve.ratelimit.memory import InMemoryRateLimiter
from mlserve.ratelimit.redis import RedisRateLimiter
from mlserve.server.app import create_app

Run = Callable[[Coroutine[Any, Any, Any]], Any]
FLOWER = {"features": [5.1, 3.5, 1.4, 0.2]}


def app_settings(registry: Path, tmp_path: Path, url: str, prefix: str, **redis: Any) -> Any:
    return load_settings(
        None,
        home=str(tmp_path / "home"),
        registry={"path": str(registry)},
        rate_limit={"enabled": True, "rate": 0.01, "burst": 3},
        redis={"url": url, "key_prefix": prefix, "health_check_interval_s": 0.2, **redis},
    )


@pytest.mark.redis
def test_the_bucket_allows_a_burst_then_refuses_like_the_in_memory_one(
    make_backend: Callable[..., Any], run: Run
) -> None:
    limiter = RedisRateLimiter(make_backend())
    reference = InMemoryRateLimiter()
    limit = Limit(rate=0.5, burst=3)

    shared = [run(limiter.acquire("principal:a", limit)) for _ in range(5)]
    local = [run(reference.acquire("principal:a", limit)) for _ in range(5)]

    assert [d.allowed for d in shared] == [True, True, True, False, False]
    assert [d.allowed for d in shared] == [d.allowed for d in local]
    assert [d.remaining for d in shared] == [d.remaining for d in local] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 for d in shared)
    refused = shared[-1]
    assert 0 < refused.retry_after_s <= 2.0  # one token at 0.5/s
    assert refused.reset_after_s == pytest.approx(local[-1].reset_after_s, abs=0.2)
    assert dict(refused.headers()) == {
        b"x-ratelimit-limit": b"3",
        b"x-ratelimit-remaining": b"0",
        b"x-ratelimit-reset": b"6",
    }


@pytest.mark.redis
def test_two_replicas_share_one_bucket_and_it_refills(
    make_backend: Callable[..., Any], run: Run
) -> None:
    replica_a = RedisRateLimiter(make_backend())
    replica_b = RedisRateLimiter(make_backend())
    slow = Limit(rate=0.01, burst=4)  # no refill to speak of during the test

    allowed = [
        run((replica_a if i % 2 else replica_b).acquire("api_key:ci", slow)).allowed
        for i in range(8)
    ]
    assert allowed == [True] * 4 + [False] * 4  # the burst, across both replicas together

    fast = Limit(rate=20.0, burst=1)
    assert run(replica_a.acquire("api_key:fast", fast)).allowed
    deadline = time.monotonic() + 5
    while not run(replica_b.acquire("api_key:fast", fast)).allowed:  # refills at 20/s
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.01)  # polling interval of a bounded wait


@pytest.mark.redis
def test_buckets_are_per_client_and_expire_once_full(
    make_backend: Callable[..., Any], run: Run, redis_client: Any, key_prefix: str
) -> None:
    limiter = RedisRateLimiter(make_backend())
    limit = Limit(rate=100.0, burst=2)
    for _ in range(2):
        run(limiter.acquire("addr:10.0.0.1", limit))
    assert run(limiter.acquire("addr:10.0.0.2", limit)).allowed  # another client, own bucket

    key = f"{key_prefix}rl:addr:10.0.0.1"
    ttl_ms = redis_client.pttl(key)
    # Empty at 100/s: full again in 20 ms; kept 1 s longer, then Redis drops it.
    assert 0 < ttl_ms <= 1100


@pytest.mark.redis
def test_the_server_answers_429_with_headers_across_two_apps(
    iris_registry: Path, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    settings = app_settings(iris_registry, tmp_path, redis_url, key_prefix)
    with (
        TestClient(create_app(settings)) as replica_a,
        TestClient(create_app(settings)) as replica_b,
    ):
        answers = [
            (replica_a if i % 2 else replica_b).post("/api/predict", json=FLOWER) for i in range(5)
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    assert answers[0].headers["x-ratelimit-limit"] == "3"
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_redis_down_fails_open_to_per_process_buckets_and_says_so_once(
    iris_registry: Path,
    tmp_path: Path,
    dead_redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = app_settings(iris_registry, tmp_path, dead_redis_url, "mlst-dead:")
    caplog.set_level(logging.INFO, logger="mlserve")
    with TestClient(create_app(settings)) as client:
        health = client.get("/api/health").json()  # limited too: the first of 3 tokens
        started = time.perf_counter()
        answers = [client.post("/api/predict", json=FLOWER) for _ in range(4)]
        elapsed = time.perf_counter() - started

    # Nobody is refused because of Redis; the client is still limited by this process.
    assert [r.status_code for r in answers] == [200, 200, 429, 429]
    assert elapsed < 2.0  # no per-request connection timeouts while Redis is known down
    assert health["status"] == "degraded"
    assert health["dependencies"] == {"redis": "down"}
    failing_open = [r for r in caplog.records if "failing open" in r.getMessage()]
    assert len(failing_open) == 1
    unreachable = [r for r in caplog.records if r.name == "mlserve.backends.redis"]
    assert len(unreachable) == 1  # one line per change of state, not per request


def test_redis_down_fails_closed_with_503_when_configured(
    iris_registry: Path, tmp_path: Path, dead_redis_url: str
) -> None:
    settings = app_settings(
        iris_registry, tmp_path, dead_redis_url, "mlst-dead:", rate_limit_fail_open=False
    )
    with TestClient(create_app(settings)) as client:
        refused = client.post("/api/predict", json=FLOWER)
        ready = client.get("/api/ready")  # probes are never limited

    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_unavailable"
    assert "Redis" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert ready.status_code == 200
