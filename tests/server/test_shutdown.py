"""The lifespan's shutdown is bounded: a step that never finishes is logged with where it waits,
and the server stops without it (a SIGTERM always ends the process)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlserve.config import Settings
from mlserve.schemas import ModelMetadata
from mlserve.server import app as app_module
from mlserve.server.app import create_app
from mlserve.serving.traffic import TrafficController


def test_a_shutdown_step_that_never_finishes_is_named_and_the_rest_still_runs(
    iris_meta: ModelMetadata,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def waits_for_good(self: Any) -> None:
        await asyncio.Event().wait()  # set by nobody

    monkeypatch.setattr(TrafficController, "close", waits_for_good)
    monkeypatch.setattr(app_module, "SHUTDOWN_SLACK_S", 0.0)
    settings = make_settings(server={"graceful_timeout": 0.5})
    app = create_app(settings)
    with caplog.at_level(logging.INFO, logger="mlserve"), TestClient(app) as client:
        flower = {"features": [5.1, 3.5, 1.4, 0.2]}
        assert client.post("/api/predict", json=flower).status_code == 200
        started = time.monotonic()
    stopped_in = time.monotonic() - started

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith("shutdown: traffic did not finish within 0.5 s")
    assert "waits_for_good" in errors[0]  # where it was stuck, for whoever reads the log
    assert "Event.wait" in errors[0]
    # The steps after it ran: the models stopped, and the server said it stopped.
    assert "server stopped" in caplog.text
    assert 0.4 < stopped_in < 30


def test_a_shutdown_step_that_fails_still_fails_the_shutdown(
    iris_meta: ModelMetadata,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def breaks(self: Any) -> None:
        raise RuntimeError("traffic could not stop")

    monkeypatch.setattr(TrafficController, "close", breaks)
    client = TestClient(create_app(make_settings()))
    client.__enter__()
    with pytest.raises(RuntimeError, match="traffic could not stop"):
        client.__exit__(None, None, None)
