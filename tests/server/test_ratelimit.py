"""Token-bucket rate limits: per key (or client address), per role, 429 with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from mlserve.config import Settings
from mlserve.keys import KeyStore
from mlserve.ratelimit import Decision, Limit
from mlserve.ratelimit.memory import InMemoryRateLimiter
from mlserve.schemas import ModelMetadata

from .conftest import error_of

PREDICT = {"features": [6.1, 2.8, 4.7, 1.2], "model": "iris"}
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take(limiter: InMemoryRateLimiter, key: str, limit: Limit, n: int = 1) -> list[Decision]:
    async def run() -> list[Decision]:
        return [await limiter.acquire(key, limit) for _ in range(n)]

    return asyncio.run(run())


# ---------------------------------------------------------------------------- the limiter
def test_burst_is_allowed_then_refused_with_retry_after() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limit = Limit(rate=2.0, burst=3)
    decisions = take(limiter, "a", limit, 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    refused = decisions[-1]
    assert refused.retry_after_s == pytest.approx(0.5)  # one token at 2/s
    assert refused.reset_after_s == pytest.approx(1.5)  # three tokens at 2/s


def test_bucket_recovers_after_the_refill_time() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limit = Limit(rate=2.0, burst=3)
    take(limiter, "a", limit, 3)
    assert not take(limiter, "a", limit)[0].allowed
    clock.now += 0.49
    assert not take(limiter, "a", limit)[0].allowed
    clock.now += 0.02
    assert take(limiter, "a", limit)[0].allowed
    clock.now += 60  # long idle: full again, never more than the burst
    decisions = take(limiter, "a", limit, 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]


def test_buckets_are_separate_per_key() -> None:
    limiter = InMemoryRateLimiter(clock=FakeClock())
    limit = Limit(rate=1.0, burst=1)
    assert take(limiter, "api_key:a", limit)[0].allowed
    assert not take(limiter, "api_key:a", limit)[0].allowed
    assert take(limiter, "api_key:b", limit)[0].allowed


def test_the_bucket_table_is_bounded() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(max_buckets=3, clock=clock)
    limit = Limit(rate=1.0, burst=1)
    for key in "abcde":
        take(limiter, key, limit)
    assert len(limiter) == 3
    # "a" was evicted (least recently used): it starts over with a full bucket.
    assert take(limiter, "a", limit)[0].allowed
    assert not take(limiter, "e", limit)[0].allowed


def test_idle_refilled_buckets_are_swept() -> None:
    from mlserve.ratelimit import memory as ratelimit

    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limit = Limit(rate=10.0, burst=5)
    for i in range(100):
        take(limiter, f"idle-{i}", limit)
    clock.now += 1.0  # every idle bucket has refilled
    take(limiter, "busy", limit, ratelimit.SWEEP_EVERY - 100)
    assert len(limiter) == 1


# ---------------------------------------------------------------------------- the server
def test_rate_limiting_is_off_by_default(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    for _ in range(120):  # beyond the default burst of 100
        response = client.post("/api/predict", json=PREDICT)
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


def test_burst_exceeded_answers_429_with_headers(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(rate_limit={"enabled": True, "rate": 0.5, "burst": 3})
    for remaining in (2, 1, 0):
        response = client.post("/api/predict", json=PREDICT)  # the fast path is limited too
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert int(response.headers["x-ratelimit-reset"]) >= 1
    response = client.get("/api/models")
    error = error_of(response, 429, "rate_limited")
    assert "rate limit" in error["message"]
    assert response.headers["retry-after"] == "2"  # one token at 0.5/s
    assert response.headers["x-ratelimit-limit"] == "3"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "6"  # the whole bucket at 0.5/s
    assert 'mlserve_errors_total{code="rate_limited"} 1.0' in client.get("/metrics").text


def test_a_limited_client_recovers_after_the_refill_time(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's limiter on a clock the test moves: a slow machine cannot refill the bucket
    # between the requests (it did at 20/s when three requests took over 50 ms).
    clock = FakeClock()
    monkeypatch.setattr(
        "mlserve.server.middleware.ratelimit.make_rate_limiter",
        lambda settings, redis: InMemoryRateLimiter(clock=clock),
    )
    client = serve(rate_limit={"enabled": True, "rate": 20, "burst": 2})
    statuses = [client.post("/api/predict", json=PREDICT).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    clock.now += 0.04  # not yet a token's worth at 20/s
    assert client.post("/api/predict", json=PREDICT).status_code == 429
    clock.now += 0.02
    assert client.post("/api/predict", json=PREDICT).status_code == 200


def test_probes_and_metrics_are_not_limited(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(rate_limit={"enabled": True, "rate": 0.1, "burst": 1})
    for _ in range(5):
        for path in ("/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "x-ratelimit-limit" not in response.headers
    assert client.get("/api/models").status_code == 200
    assert client.get("/api/models").status_code == 429


def test_v2_paths_answer_429_in_the_v2_error_shape(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(rate_limit={"enabled": True, "rate": 0.1, "burst": 1})
    client.get("/v2")
    response = client.get("/v2")
    assert response.status_code == 429
    assert set(response.json()) == {"error"}
    assert response.headers["retry-after"] == "10"


@pytest.fixture
def keys(make_settings: Callable[..., Settings]) -> KeyStore:
    return KeyStore(make_settings().keys_file)


def test_buckets_are_per_api_key(
    iris_meta: ModelMetadata, keys: KeyStore, serve: Callable[..., TestClient]
) -> None:
    first = keys.create(role="predict", name="first").key
    second = keys.create(role="predict", name="second").key
    client = serve(rate_limit={"enabled": True, "rate": 0.1, "burst": 2})
    one, two = {"X-API-Key": first}, {"X-API-Key": second}
    assert [client.get("/api/models", headers=one).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/api/models", headers=two).status_code == 200
    # Unauthenticated requests are refused before they reach (or drain) any bucket.
    assert client.get("/api/models").status_code == 401
    assert client.get("/api/models", headers=two).status_code == 200


def test_per_role_overrides(
    iris_meta: ModelMetadata, keys: KeyStore, serve: Callable[..., TestClient]
) -> None:
    predict = keys.create(role="predict", name="ci").key
    admin = keys.create(role="admin", name="ops").key
    client = serve(
        rate_limit={
            "enabled": True,
            "rate": 0.1,
            "burst": 1,
            "roles": {"admin": {"rate": 0.1, "burst": 5}},
        }
    )
    response = client.get("/api/models", headers={"X-API-Key": admin})
    assert response.headers["x-ratelimit-limit"] == "5"
    response = client.get("/api/models", headers={"X-API-Key": predict})
    assert response.headers["x-ratelimit-limit"] == "1"
    assert client.get("/api/models", headers={"X-API-Key": predict}).status_code == 429
    assert all(
        client.get("/api/models", headers={"X-API-Key": admin}).status_code == 200 for _ in range(4)
    )


def test_openapi_documents_429_when_enabled(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    paths = serve(rate_limit={"enabled": True}).get("/openapi.json").json()["paths"]
    assert "429" in paths["/api/predict"]["post"]["responses"]
    assert "429" not in paths["/api/live"]["get"]["responses"]
