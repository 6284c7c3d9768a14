"""The prediction cache: keyed on (model, version, prepared input); LRU, TTL, off by default."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlserve.cache.memory import MemoryCache
from mlserve.registry import Registry
from mlserve.runtime.model import Prediction
from mlserve.schemas import ModelMetadata

from .conftest import IRIS_FEATURES
from .traffic_helpers import FLOWERS, PATHS, Clock, scrape, tree_version, value

FLOWER = FLOWERS[0]


def _p(label: str) -> Prediction:
    return Prediction(label=label, confidence=None, probabilities=None)


# ---------------------------------------------------------------------------- MemoryCache
def test_memory_cache_drops_least_recently_used_entries_beyond_its_bound() -> None:
    evicted: list[str] = []
    cache = MemoryCache(max_entries=2, ttl_s=60, clock=Clock(), on_evict=evicted.append)

    async def body() -> None:
        await cache.set("m", 1, "a", _p("A"))
        await cache.set("m", 1, "b", _p("B"))
        assert await cache.get("m", 1, "a") == _p("A")  # "a" is now the most recent
        await cache.set("m", 1, "c", _p("C"))

        assert await cache.get("m", 1, "b") is None
        assert await cache.get("m", 1, "a") == _p("A")
        assert await cache.get("m", 1, "c") == _p("C")
        assert len(cache) == 2

    asyncio.run(body())
    assert evicted == ["m"]


def test_memory_cache_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=10, ttl_s=5, clock=clock)

    async def body() -> None:
        await cache.set("m", 1, [1.0, 2.0], _p("A"))
        clock.advance(4.9)
        assert await cache.get("m", 1, [1.0, 2.0]) == _p("A")
        clock.advance(0.2)
        assert await cache.get("m", 1, [1.0, 2.0]) is None
        assert len(cache) == 0

    asyncio.run(body())


def test_memory_cache_keys_include_model_and_version() -> None:
    cache = MemoryCache(max_entries=10, ttl_s=60)

    async def body() -> None:
        await cache.set("m", 1, "text", _p("A"))
        assert await cache.get("m", 2, "text") is None
        assert await cache.get("other", 1, "text") is None
        await cache.set_many("m", 2, ["x" * 1000, "y" * 1000], [_p("X"), _p("Y")])
        assert await cache.get_many("m", 2, ["y" * 1000, "z", "x" * 1000]) == [
            _p("Y"),
            None,
            _p("X"),
        ]

    asyncio.run(body())


# ---------------------------------------------------------------------------- server
@pytest.fixture
def cached(iris_meta: ModelMetadata, serve: Callable[..., TestClient]) -> TestClient:
    return serve(cache={"enabled": True, "max_entries": 100})


def _predict(client: TestClient, features: Any = FLOWER, **headers: str) -> Any:
    response = client.post("/api/predict", json={"features": features}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_cache_is_off_by_default_and_then_no_header_is_sent(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    for headers in PATHS.values():
        assert "x-cache" not in _predict(client, **headers).headers
    batch = client.post("/api/predict/batch", json={"records": FLOWERS})
    assert "x-cache-hits" not in batch.headers
    samples = scrape(client)
    assert not samples.get("mlserve_cache_hits_total")
    assert not samples.get("mlserve_cache_misses_total")
    assert client.app.state.mlserve.traffic.cache is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", PATHS)
def test_second_identical_request_is_a_hit_with_the_same_answer(
    cached: TestClient, path: str
) -> None:
    first = _predict(cached, **PATHS[path])
    second = _predict(cached, **PATHS[path])

    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    strip = {"processing_time_ms", "request_id"}
    assert {k: v for k, v in first.json().items() if k not in strip} == {
        k: v for k, v in second.json().items() if k not in strip
    }
    samples = scrape(cached)
    assert value(samples, "mlserve_cache_hits_total", model="iris") == 1
    assert value(samples, "mlserve_cache_misses_total", model="iris") == 1
    # A cached answer is still a prediction served by that version.
    assert value(samples, "mlserve_predictions_total", model="iris", version="1") == 2


def test_fast_path_and_route_share_one_cache_and_agree(cached: TestClient) -> None:
    fast = _predict(cached, **PATHS["fast"])
    route = _predict(cached, **PATHS["route"])
    fast_again = _predict(cached, **PATHS["fast"])

    assert [fast.headers["x-cache"], route.headers["x-cache"]] == ["miss", "hit"]
    assert fast_again.headers["x-cache"] == "hit"
    assert fast.json()["prediction"] == route.json()["prediction"]
    assert fast.json()["probabilities"] == route.json()["probabilities"]


def test_key_is_the_prepared_input_not_headers_or_request_ids(cached: TestClient) -> None:
    named = dict(zip(IRIS_FEATURES, FLOWER, strict=True))
    as_ints = [5.1, 3.5, 1.4, 0.2]
    _predict(cached, FLOWER, **{"X-Request-ID": "one", "X-Client-ID": "a"})

    by_name = _predict(cached, named, **{"X-Request-ID": "two", "X-Client-ID": "b"})
    same_values = _predict(cached, as_ints)
    other = _predict(cached, FLOWERS[1])

    assert by_name.headers["x-cache"] == "hit"
    assert by_name.json()["request_id"] == "two"  # the answer is cached, not the envelope
    assert same_values.headers["x-cache"] == "hit"
    assert other.headers["x-cache"] == "miss"


def test_entries_expire_after_the_ttl(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(cache={"enabled": True, "ttl_s": 60})
    clock = Clock()
    client.app.state.mlserve.traffic.cache.clock = clock  # type: ignore[attr-defined]
    _predict(client)
    clock.advance(59)
    assert _predict(client).headers["x-cache"] == "hit"
    clock.advance(61)
    assert _predict(client).headers["x-cache"] == "miss"


def test_least_recently_used_entries_are_evicted_and_counted(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(cache={"enabled": True, "max_entries": 2})
    for flower in FLOWERS[:3]:
        _predict(client, flower)

    assert _predict(client, FLOWERS[0]).headers["x-cache"] == "miss"  # evicted
    assert _predict(client, FLOWERS[2]).headers["x-cache"] == "hit"
    samples = scrape(client)
    assert value(samples, "mlserve_cache_evictions_total", model="iris") == 2
    assert value(samples, "mlserve_cache_entries") == 2


def test_a_new_version_never_serves_the_old_versions_answers(
    iris_meta: ModelMetadata,
    registry: Registry,
    iris: tuple[Any, Any],
    serve: Callable[..., TestClient],
) -> None:
    tree_version(registry, iris)
    client = serve(cache={"enabled": True})
    old = _predict(client)
    assert _predict(client).headers["x-cache"] == "hit"
    registry.set_alias("iris", "production", 2)
    assert client.post("/api/models/iris/reload").json()["version"] == 2

    new = _predict(client)
    new_again = _predict(client)
    pinned_old = client.post("/api/predict", json={"features": FLOWER, "model": "iris:1"})

    assert new.headers["x-cache"] == "miss"
    assert new.json()["version"] == 2
    assert new.json()["probabilities"] != old.json()["probabilities"]
    assert new_again.headers["x-cache"] == "hit"
    assert new_again.json()["probabilities"] == new.json()["probabilities"]
    # The old version, asked for explicitly, still finds its own entry.
    assert pinned_old.headers["x-cache"] == "hit"
    assert pinned_old.json()["probabilities"] == old.json()["probabilities"]


def test_batch_answers_cached_rows_from_the_cache_and_says_how_many(
    cached: TestClient,
) -> None:
    _predict(cached, FLOWERS[0])
    _predict(cached, FLOWERS[2])
    single = {tuple(f): _predict(cached, f).json()["prediction"] for f in FLOWERS}

    first = cached.post("/api/predict/batch", json={"records": FLOWERS + [[7.0, 3.2, 4.7, 1.4]]})
    again = cached.post("/api/predict/batch", json={"records": FLOWERS})

    assert first.status_code == 200, first.text
    assert first.headers["x-cache-hits"] == str(len(FLOWERS))
    assert again.headers["x-cache-hits"] == str(len(FLOWERS))
    got = [p["prediction"] for p in first.json()["predictions"]]
    assert got[: len(FLOWERS)] == [single[tuple(f)] for f in FLOWERS]
    assert first.json()["batch_size"] == len(FLOWERS) + 1


def test_batch_misses_go_to_the_model_in_one_call(cached: TestClient) -> None:
    _predict(cached, FLOWERS[1])
    before = scrape(cached)

    response = cached.post("/api/predict/batch", json={"records": FLOWERS})

    assert response.headers["x-cache-hits"] == "1"
    after = scrape(cached)
    calls, rows = "mlserve_batch_size_count", "mlserve_batch_size_sum"
    assert value(after, calls, model="iris") - value(before, calls, model="iris") == 1
    assert value(after, rows, model="iris") - value(before, rows, model="iris") == len(FLOWERS) - 1


def test_failed_predictions_are_not_cached(
    register: Callable[..., ModelMetadata],
    poisonable_estimator: Any,
    serve: Callable[..., TestClient],
) -> None:
    register(poisonable_estimator, "poison", feature_names=IRIS_FEATURES)
    client = serve(raise_server_exceptions=False, cache={"enabled": True})
    poisoned = {"features": [-999.0, 1.0, 1.0, 1.0]}

    assert client.post("/api/predict", json=poisoned).status_code == 500
    again = client.post("/api/predict", json=poisoned)

    assert again.status_code == 500
    assert "x-cache" not in again.headers
    assert value(scrape(client), "mlserve_cache_misses_total", model="poison") == 2
