"""Failures in background tasks are logged, never swallowed in silence."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable
from typing import Any

import pytest

from mlserve.config import Settings
from mlserve.registry import ModelRef, Registry
from mlserve.serving.manager import ModelManager, ServedModel
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.traffic import TrafficController


def test_a_failed_background_load_is_logged_naming_the_models_not_loaded(
    make_settings: Callable[..., Settings],
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(traffic={"watch_interval_s": 0})
    metrics = ServerMetrics()
    manager = ModelManager(settings, registry, metrics)
    manager.models["sentiment"] = ServedModel(name="sentiment", ref=ModelRef.parse("sentiment:3"))
    traffic = TrafficController(settings=settings, manager=manager, metrics=metrics)

    async def failing_load() -> None:
        raise RuntimeError("bug while loading")

    async def scenario() -> None:
        traffic.start(failing_load())
        assert traffic._task is not None
        await asyncio.wait_for(traffic._task, 10)  # preloads, then no watcher (interval 0)
        await traffic.close()

    with caplog.at_level(logging.WARNING, logger="mlserve.serving.traffic"):
        asyncio.run(scenario())

    (record,) = [r for r in caplog.records if r.name == "mlserve.serving.traffic"]
    assert record.levelno == logging.WARNING
    assert "background model loading failed" in record.getMessage()
    assert "sentiment:3" in record.getMessage()
    assert record.exc_info is not None and "bug while loading" in str(record.exc_info[1])


def test_the_worker_logs_a_failed_look_at_the_job_queue(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlserve.worker import app as celery_app

    worker = celery_app.WorkerRuntime(make_settings())
    looks: list[str] = []

    class Client:
        async def llen(self, queue: str) -> int:
            looks.append(queue)
            worker._closing = True  # one look is enough
            raise ConnectionError("connection reset by peer")

    worker.backend = types.SimpleNamespace(available=True, client=Client())  # type: ignore[assignment]
    real_sleep = asyncio.sleep

    async def no_wait(seconds: float, *args: Any) -> Any:
        return await real_sleep(0, *args)

    # Only the worker module's view of asyncio: its timer between looks does not hold the test.
    fast = types.SimpleNamespace(**{**vars(asyncio), "sleep": no_wait})
    monkeypatch.setattr(celery_app, "asyncio", fast)

    try:
        with caplog.at_level(logging.WARNING, logger="mlserve.worker.app"):
            asyncio.run(asyncio.wait_for(worker._watch_queue(), 10))
    finally:
        worker.loop.close()  # made for the worker's thread, never started here

    assert looks == ["mlserve:jobs"]
    (record,) = [r for r in caplog.records if r.name == "mlserve.worker.app"]
    assert "mlserve:jobs" in record.getMessage()
    assert "connection reset by peer" in record.getMessage()
