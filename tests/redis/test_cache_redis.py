"""The prediction cache in Redis: shared by replicas, keyed by model, version and the prepared
input, expiring by TTL; bypassed (misses, no errors) while Redis is down."""

from __future__ import annotations

import math
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

from mlserve.cache.redis import RedisPredictionCache, input_digest
from mlserve.config import load_settings
from mlserve.runtime.model import Prediction
from mlserve.server.app import create_app

Run = Callable[[Coroutine[Any, Any, Any]], Any]

POSITIVE = Prediction(
    label="positive", confidence=0.9, probabilities={"negative": 0.1, "positive": 0.9}
)


@pytest.mark.redis
def test_an_answer_is_shared_by_every_replica(make_backend: Callable[..., Any], run: Run) -> None:
    replica_a = RedisPredictionCache(make_backend(), ttl_s=60)
    replica_b = RedisPredictionCache(make_backend(), ttl_s=60)

    assert run(replica_b.get("sentiment", 1, "great")) is None
    run(replica_a.set("sentiment", 1, "great", POSITIVE))

    assert run(replica_b.get("sentiment", 1, "great")) == POSITIVE
    assert run(replica_b.get("sentiment", 2, "great")) is None  # another version: a miss
    assert run(replica_b.get("other", 1, "great")) is None
    assert len(replica_a) == 0  # nothing held in this process


@pytest.mark.redis
@pytest.mark.parametrize(
    "prediction",
    [
        Prediction(label=3, confidence=0.5, probabilities={"3": 0.5, "4": 0.5}),
        Prediction(label=True, confidence=None, probabilities=None),
        Prediction(label=1.25, confidence=None, probabilities=None),
        Prediction(label="é ✓ \u2028", confidence=1.0, probabilities={"é ✓ \u2028": 1.0}),
    ],
    ids=["int", "bool", "regression", "unicode"],
)
def test_labels_keep_their_type(
    make_backend: Callable[..., Any], run: Run, prediction: Prediction
) -> None:
    cache = RedisPredictionCache(make_backend(), ttl_s=60)
    run(cache.set("m", 1, [1.0, 2.0], prediction))
    found = run(cache.get("m", 1, [1.0, 2.0]))

    assert found == prediction
    assert type(found.label) is type(prediction.label)


def test_the_key_is_the_normalized_input() -> None:
    assert input_digest([1, 2]) == input_digest([1.0, 2.0])
    assert input_digest([0.0, 1.0]) == input_digest([-0.0, 1.0])
    assert input_digest([math.nan]) == input_digest([float("nan")])
    assert input_digest([1.0, 2.0]) != input_digest([2.0, 1.0])
    assert input_digest("1") != input_digest([1.0])
    assert input_digest("x" * 100_000) != input_digest("x" * 99_999)
    assert len(input_digest("x" * 100_000)) == 32  # keys stay small


@pytest.mark.redis
def test_many_rows_in_one_round_trip(make_backend: Callable[..., Any], run: Run) -> None:
    cache = RedisPredictionCache(make_backend(), ttl_s=60)
    answers = [Prediction(label=f"l{i}", confidence=None, probabilities=None) for i in range(3)]
    run(cache.set_many("m", 1, ["a", "b", "c"], answers))

    found = run(cache.get_many("m", 1, ["a", "x", "c"]))

    assert found == [answers[0], None, answers[2]]
    assert run(cache.get_many("m", 1, [])) == []


@pytest.mark.redis
def test_entries_expire_after_the_ttl(
    make_backend: Callable[..., Any], run: Run, redis_client: Any, key_prefix: str
) -> None:
    cache = RedisPredictionCache(make_backend(), ttl_s=0.3)
    run(cache.set("m", 1, "a", POSITIVE))
    (key,) = redis_client.keys(f"{key_prefix}cache:*")

    assert 0 < redis_client.pttl(key) <= 300
    deadline = time.monotonic() + 5
    while run(cache.get("m", 1, "a")) is not None:
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.05)  # polling interval of a bounded wait


@pytest.mark.redis
def test_clear_forgets_only_this_deployments_entries(
    make_backend: Callable[..., Any], run: Run, redis_client: Any, key_prefix: str
) -> None:
    mine = RedisPredictionCache(make_backend(), ttl_s=60)
    theirs = RedisPredictionCache(make_backend(prefix=key_prefix + "other:"), ttl_s=60)
    run(mine.set_many("m", 1, [f"t{i}" for i in range(5)], [POSITIVE] * 5))
    run(theirs.set("m", 1, "t0", POSITIVE))

    run(mine.clear())

    assert run(mine.get_many("m", 1, [f"t{i}" for i in range(5)])) == [None] * 5
    assert run(theirs.get("m", 1, "t0")) == POSITIVE


@pytest.mark.redis
def test_a_malformed_entry_is_a_miss(
    make_backend: Callable[..., Any], run: Run, redis_client: Any, key_prefix: str
) -> None:
    cache = RedisPredictionCache(make_backend(), ttl_s=60)
    run(cache.set("m", 1, "a", POSITIVE))
    (key,) = redis_client.keys(f"{key_prefix}cache:*")
    redis_client.set(key, b"not json")

    assert run(cache.get("m", 1, "a")) is None


def test_redis_down_bypasses_the_cache_quickly(
    make_backend: Callable[..., Any], run: Run, dead_redis_url: str
) -> None:
    cache = RedisPredictionCache(make_backend(url=dead_redis_url), ttl_s=60)

    started = time.perf_counter()
    run(cache.set("m", 1, "a", POSITIVE))
    run(cache.set_many("m", 1, ["a", "b"], [POSITIVE, POSITIVE]))
    found = run(cache.get("m", 1, "a"))
    many = run(cache.get_many("m", 1, ["a", "b"]))
    run(cache.clear())
    elapsed = time.perf_counter() - started

    assert found is None
    assert many == [None, None]
    assert elapsed < 0.5  # known down: not a connection attempt per call


@pytest.mark.redis
def test_a_lost_connection_mid_call_is_a_miss_and_marks_redis_down(
    make_backend: Callable[..., Any], run: Run
) -> None:
    backend = make_backend(health_check_interval_s=3600)
    cache = RedisPredictionCache(backend, ttl_s=60)
    run(cache.set("m", 1, "a", POSITIVE))

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError

        raise RedisConnectionError("connection reset by peer")

    backend.client.get = refuse  # the next call loses its connection
    assert run(cache.get("m", 1, "a")) is None
    assert backend.available is False
    assert run(backend.ping()) is True  # the background ping brings it back
    assert backend.available is True


# ---------------------------------------------------------------------------- through the server
def cache_settings(registry: Path, tmp_path: Path, url: str, prefix: str) -> Any:
    return load_settings(
        None,
        home=str(tmp_path / "home"),
        registry={"path": str(registry)},
        cache={"enabled": True, "ttl_s": 60},
        redis={"url": url, "key_prefix": prefix, "health_check_interval_s": 0.2},
    )


@pytest.mark.redis
def test_a_prediction_cached_by_one_replica_is_a_hit_on_another(
    text_registry: Path, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    settings = cache_settings(text_registry, tmp_path, redis_url, key_prefix)
    body = {"text": "great and lovely"}
    with (
        TestClient(create_app(settings)) as replica_a,
        TestClient(create_app(settings)) as replica_b,
    ):
        first = replica_a.post("/api/predict", json=body)
        second = replica_b.post("/api/predict", json=body)
        batch = replica_b.post("/api/predict/batch", json={"texts": ["great and lovely", "bad"]})
        metrics = replica_b.get("/metrics").text

    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.json()["prediction"] == first.json()["prediction"] == "pos"
    assert second.json()["probabilities"] == first.json()["probabilities"]
    assert batch.headers["x-cache-hits"] == "1"
    assert 'mlserve_cache_hits_total{model="sentiment"} 2.0' in metrics
    assert 'mlserve_cache_misses_total{model="sentiment"} 1.0' in metrics
    assert "mlserve_redis_up 1.0" in metrics


def test_with_redis_down_the_cache_is_bypassed_and_predictions_succeed(
    text_registry: Path, tmp_path: Path, dead_redis_url: str
) -> None:
    settings = cache_settings(text_registry, tmp_path, dead_redis_url, "mlst-dead:")
    with TestClient(create_app(settings)) as server:
        answers = [server.post("/api/predict", json={"text": "great"}) for _ in range(3)]
        metrics = server.get("/metrics").text

    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["x-cache"] for r in answers] == ["miss", "miss", "miss"]
    assert "mlserve_redis_up 0.0" in metrics
