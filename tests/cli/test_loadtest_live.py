"""`mlserve loadtest` against a real `mlserve serve` process: every endpoint it knows, text and
tabular models, counted by the server's own metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.metrics import value
from support.servers import MlserveProcess
from typer.testing import Result

pytestmark = pytest.mark.slow

ROUTES = {
    "predict": "/api/predict",
    "batch": "/api/predict/batch",
    "v2": "/v2/models/{name}/infer",
}


def answered(server: MlserveProcess, route: str, status: str = "200") -> float:
    """POST requests the server (tests/cli/conftest.py) answered on a route, from /metrics."""
    return value(
        server.metrics(), "mlserve_http_requests_total", method="POST", route=route, status=status
    )


def run(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path, *args: str | Path
) -> dict[str, Any]:
    out = tmp_path / "report.json"
    result = cli("loadtest", "--url", server.url, "--concurrency", "4", "--json", out, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("endpoint", ["predict", "batch", "v2"])
def test_each_endpoint_is_driven_against_a_text_model(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path, endpoint: str
) -> None:
    before = answered(server, ROUTES[endpoint])
    batching = [] if endpoint == "predict" else ["--batch-size", "5"]
    data = run(
        cli, server, tmp_path, "--endpoint", endpoint, "--model", "sentiment", *batching,
        "--requests", "40", "--max-error-rate", "0",
    )  # fmt: skip

    assert data["requests"] == 40
    assert data["status_codes"] == {"200": 40}
    # The server saw them all (plus the preflight request), and timed them itself.
    assert answered(server, ROUTES[endpoint]) - before == 41
    assert data["server_process_time"]["count"] == 40


def test_v2_against_a_tabular_model_sends_jsonl_bodies_as_they_are(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP64", "data": rows}]}
    data_file = tmp_path / "bodies.jsonl"
    data_file.write_text(json.dumps(body) + "\n", encoding="utf-8")
    before = answered(server, ROUTES["v2"])

    data = run(
        cli, server, tmp_path, "--endpoint", "v2", "--model", "iris", "--data", data_file,
        "--requests", "30", "--max-error-rate", "0",
    )  # fmt: skip

    assert data["status_codes"] == {"200": 30}
    assert answered(server, ROUTES["v2"]) - before == 31


def test_text_bodies_sent_to_a_tabular_model_fail_the_error_gate(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    result = cli(
        "loadtest", "--url", server.url, "--endpoint", "v2", "--model", "iris",
        "--requests", "10", "--max-error-rate", "0", "--json", out,
    )  # fmt: skip

    assert result.exit_code == 99, (result.stdout, result.stderr)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["error_rate"] == 1.0
    assert set(data["status_codes"]) == {"400"}
