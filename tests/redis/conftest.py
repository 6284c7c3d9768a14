"""Redis-backed tests: a real redis-server from $MLSERVE_TEST_REDIS_URL (skipped, saying so,
when it is unset; a database of its own per parallel test worker, tests/support/redis.py), a key
prefix per test so tests never see each other's keys, and the registries the replicas serve.

No __init__.py here on purpose: as a package this folder would be importable as `redis` (the
tests folder is on sys.path) and shadow redis-py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.data import IRIS_FEATURES, iris_estimator, text_estimator
from support.net import free_port
from support.redis import SKIP_REASON, TEST_REDIS_URL, delete_prefixed

from mlserve.registry import Registry

T = TypeVar("T")


@pytest.fixture
def redis_url() -> str:
    """The test Redis; the test is skipped when none is configured."""
    if TEST_REDIS_URL is None:
        pytest.skip(SKIP_REASON)
    return TEST_REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix (and so a fresh Celery queue); its keys are deleted afterwards."""
    prefix = f"mlst-{uuid.uuid4().hex[:10]}:"
    yield prefix
    delete_prefixed(redis_url, prefix)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A blocking client on the test Redis, to look at what mlserve wrote."""
    from redis import Redis

    with Redis.from_url(redis_url, socket_timeout=5) as client:
        yield client


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL nothing answers on (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """run(coro): run coroutines on one event loop for the whole test (clients bound to it
    keep working between calls)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete  # type: ignore[misc]
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def make_backend(
    request: pytest.FixtureRequest, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> Iterator[Callable[..., Any]]:
    """make_backend(url=..., prefix=...): a started RedisBackend (one per "replica") on the
    test's event loop, closed at the end. Without a url: the test Redis (skipped when there
    is none) and the test's key prefix."""
    from mlserve.backends.redis import RedisBackend

    made: list[RedisBackend] = []

    def build(*, url: str | None = None, prefix: str | None = None, **kwargs: Any) -> Any:
        if url is None:
            url = request.getfixturevalue("redis_url")
            prefix = prefix or request.getfixturevalue("key_prefix")
        kwargs.setdefault("socket_timeout_s", 1.0)
        kwargs.setdefault("connect_timeout_s", 1.0)
        kwargs.setdefault("health_check_interval_s", 0.2)
        backend = RedisBackend(url=url, key_prefix=prefix or "mlst-dead:", **kwargs)
        made.append(backend)
        run(backend.start())
        return backend

    yield build
    for backend in made:
        run(backend.close())


@pytest.fixture
def iris_registry(tmp_path: Path) -> Path:
    """A registry with iris@production (tabular, four named features)."""
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    return registry.root


@pytest.fixture
def text_registry(tmp_path: Path) -> Path:
    """A registry with sentiment@production (text, pos/neg)."""
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(text_estimator(), name="sentiment", aliases=["production"])
    return registry.root
