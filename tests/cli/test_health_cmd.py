"""`mlserve health-check`: exit codes for scripts and CI, against real `mlserve serve` processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.data import iris_estimator, populate, tamper
from support.net import free_port
from support.servers import MlserveProcess, process_env, running, serve
from typer.testing import Result

from mlserve.registry import Registry

# Most tests here talk to a real `mlserve serve` process.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    """A server whose 'broken' model failed to load (its artifact was altered on disk)."""
    root = tmp_path_factory.mktemp("degraded-server")
    populate(root / "registry")
    registry = Registry(root / "registry")
    meta = registry.register_estimator(iris_estimator(), name="broken", aliases=["production"])
    tamper(registry, meta)
    with running(root / "registry", root / "home") as started:
        yield started


@pytest.fixture
def check(cli: Callable[..., Result], server: MlserveProcess) -> Callable[..., Result]:
    """`mlserve health-check ARGS... --url <the healthy server>` (tests/cli/conftest.py)."""
    return lambda *args: cli("health-check", *args, "--url", server.url)


def as_json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ---------------------------------------------------------------------------- healthy server
def test_ready_is_the_default_and_exits_0(
    check: Callable[..., Result], server: MlserveProcess
) -> None:
    result = check()
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.startswith(f"ready {server.url} (ready check)")
    assert "iris" in result.stdout and "sentiment" in result.stdout
    assert "loaded" in result.stdout
    assert check("--ready").exit_code == 0


def test_live_exits_0(check: Callable[..., Result]) -> None:
    result = check("--live", "--json")
    assert result.exit_code == 0, result.stderr
    assert as_json(result)["status"] == "live"


def test_deep_exits_0_and_lists_models(check: Callable[..., Result]) -> None:
    result = check("--deep")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.startswith("healthy ")
    for name in ("iris", "sentiment"):
        line = next(row for row in result.stdout.splitlines() if f" {name} " in row)
        assert "healthy" in line


def test_json_shape_ready(check: Callable[..., Result], server: MlserveProcess) -> None:
    result = check("--json")
    assert result.exit_code == 0, result.stderr
    assert as_json(result) == {
        "healthy": True,
        "status": "ready",
        "check": "ready",
        "url": server.url,
        "models": [{"name": "iris", "status": "loaded"}, {"name": "sentiment", "status": "loaded"}],
    }


def test_json_shape_deep(check: Callable[..., Result], server: MlserveProcess) -> None:
    result = check("--deep", "--json")
    assert result.exit_code == 0, result.stderr
    data = as_json(result)
    assert {k: data[k] for k in ("healthy", "status", "check", "url")} == {
        "healthy": True,
        "status": "healthy",
        "check": "deep",
        "url": server.url,
    }
    assert sorted(m["name"] for m in data["models"]) == ["iris", "sentiment"]
    for model in data["models"]:
        assert set(model) == {"name", "version", "status", "latency_ms", "error"}
        assert (model["version"], model["status"], model["error"]) == (1, "healthy", None)
        assert model["latency_ms"] >= 0


@pytest.mark.parametrize("mode", ["--ready", "--live", "--deep"])
def test_quiet_prints_nothing(check: Callable[..., Result], mode: str) -> None:
    result = check(mode, "--quiet", "--json")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


# ---------------------------------------------------------------------------- unhealthy
def test_unreachable_exits_1(cli: Callable[..., Result]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("health-check", "--url", url)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"unreachable {url}")
    assert f"cannot reach {url}: connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_json_and_quiet(cli: Callable[..., Result]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("health-check", "--url", url, "--json")
    assert result.exit_code == 1
    data = as_json(result)
    assert (data["healthy"], data["status"], data["models"]) == (False, "unreachable", [])
    assert "connection refused" in data["error"]
    quiet = cli("health-check", "--url", url, "--quiet")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (1, "", "")


def test_an_error_answer_is_not_called_unreachable(
    cli: Callable[..., Result], server: MlserveProcess
) -> None:
    # Something answers at this URL, but not mlserve: /nope/api/ready is a 404.
    result = cli("health-check", "--url", server.url + "/nope", "--json")
    assert result.exit_code == 1
    data = as_json(result)
    assert data["status"] == "error"
    assert data["error"].startswith("404 ")


def test_degraded_server_fails_deep(cli: Callable[..., Result], degraded: MlserveProcess) -> None:
    result = cli("health-check", "--url", degraded.url, "--deep", "--json")
    assert result.exit_code == 1, result.stdout
    data = as_json(result)
    assert data["status"] == "degraded"
    models = {m["name"]: m for m in data["models"]}
    assert models["broken"]["status"] == "degraded"
    assert models["broken"]["error"]
    assert models["iris"]["status"] == models["sentiment"]["status"] == "healthy"

    table = cli("health-check", "--url", degraded.url, "--deep")
    assert table.exit_code == 1
    assert table.stdout.startswith(f"degraded {degraded.url}")
    assert "broken" in table.stdout


def test_degraded_server_is_still_ready(
    cli: Callable[..., Result], degraded: MlserveProcess
) -> None:
    # Readiness is the server's: it serves traffic while one model serves; --deep tells more.
    result = cli("health-check", "--url", degraded.url, "--json")
    assert result.exit_code == 0, result.stdout
    models = {m["name"]: m["status"] for m in as_json(result)["models"]}
    assert models == {"broken": "failed", "iris": "loaded", "sentiment": "loaded"}


# ---------------------------------------------------------------------------- --wait
def test_wait_polls_until_a_server_starting_later_is_ready(
    server: MlserveProcess, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    waiting = subprocess.Popen(
        [sys.executable, "-m", "mlserve", "health-check", "--url", url, "--wait", "60", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(tmp_path / "home"),
    )
    late = None
    try:
        # Nothing listens yet: a health-check that did not poll would fail right away.
        assert server.registry is not None
        late = serve(server.registry, tmp_path / "home", port=port)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(timeout=5)
        if late is not None:
            late.stop()
    assert waiting.returncode == 0, (out, err, late.output() if late else "")
    data = json.loads(out)
    assert (data["healthy"], data["status"], data["url"]) == (True, "ready", url)


def test_wait_times_out_against_a_port_nobody_listens_on(cli: Callable[..., Result]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = cli("health-check", "--url", url, "--wait", "1", "--json")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert as_json(result)["status"] == "unreachable"
    assert 1.0 <= elapsed < 5.0, elapsed  # polled up to the deadline, and no longer


def test_wait_cuts_each_probe_timeout_to_the_time_left(
    cli: Callable[..., Result], silent_url: str
) -> None:
    # A server that never answers: a whole 10 s --timeout per probe would overrun --wait 1.
    started = time.monotonic()
    result = cli("health-check", "--url", silent_url, "--wait", "1", "--timeout", "10", "--json")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert as_json(result)["status"] == "unreachable"
    assert 1.0 <= elapsed < 4.0, elapsed


# ---------------------------------------------------------------------------- usage
def test_help_lists_every_exit_code(cli: Callable[..., Result]) -> None:
    result = cli("health-check", "--help")
    assert result.exit_code == 0
    summary = " ".join(result.stdout.split())
    assert "Exit 0 when the server is healthy, 1 when not, 2 on a usage or config error" in summary


@pytest.mark.parametrize("modes", [("--live", "--deep"), ("--ready", "--deep")])
def test_two_modes_are_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None], modes: tuple[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_user_error(cli("health-check", *modes, "--url", url), "choose one of", code=2)


def test_bad_url_is_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("health-check", "--url", "localhost:8000"), "--url must start", code=2)
