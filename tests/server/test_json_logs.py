"""`mlserve serve --log-format json`: every line a real server writes is one JSON object, from
the banner to the last shutdown line, tracebacks and uvicorn's own records included."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

FLOWER = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def registry_with_a_broken_model(
    tmp_path: Path, iris_estimator: Any, broken_estimator: Any
) -> Path:
    registry = Registry(tmp_path / "served")
    for name, estimator in (("iris", iris_estimator), ("broken", broken_estimator)):
        registry.register_estimator(
            estimator,
            name=name,
            aliases=["production"],
            feature_names=IRIS_FEATURES,
            check=name != "broken",
        )
    return registry.root


def test_every_line_of_a_json_logging_server_is_a_json_record(
    start_server: Callable[..., MlserveProcess], registry_with_a_broken_model: Path
) -> None:
    server = start_server(
        registry_with_a_broken_model, log_level="debug", args=["--log-format", "json"]
    )
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        statuses = [
            http.post("/api/predict", json={"features": FLOWER, "model": "iris"}).status_code,
            http.post("/api/predict", json={"features": [1.0], "model": "iris"}).status_code,
            http.post("/api/predict", json={"features": FLOWER, "model": "broken"}).status_code,
            http.get("/no/such/route").status_code,
            http.post(
                "/api/predict", content=b"{", headers={"content-type": "application/json"}
            ).status_code,
        ]
    assert statuses == [200, 422, 500, 404, 422]
    assert server.terminate() == 0

    output = server.output()
    lines = output.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}\n{output}")
    assert all(isinstance(r, dict) and {"time", "level", "logger", "message"} <= set(r)
               for r in records)  # fmt: skip
    assert "\x1b" not in output
    assert not [r for r in records if "color_message" in r]

    (banner,) = [r for r in records if r["message"].startswith("mlserve serving ")]
    assert banner["url"] == server.url
    assert banner["docs"] == f"{server.url}/docs"
    messages = [r["message"] for r in records]
    assert any(m.startswith("Started server process") for m in messages)  # uvicorn's
    assert messages[-1].startswith("Finished server process")  # the shutdown, to the end
    access = [r for r in records if r["logger"] == "mlserve.access" and r["path"] != "/api/ready"]
    assert [r["status"] for r in access] == statuses
    # The broken model's traceback is one field of one record, not lines of its own.
    (failure,) = [r for r in records if r["logger"] == "mlserve.runtime.batcher"]
    assert failure["level"] == "error"
    assert "Traceback (most recent call last)" in failure["exception"]
