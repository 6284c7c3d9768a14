"""`mlserve loadtest` against a real HTTP server on 127.0.0.1: counts, gates, exit codes."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET  # noqa: S405 - parses only the command's own output

import pytest
from typer.testing import Result

SLOW_S = 0.05


@dataclass
class FakeServer:
    """A tiny aiohttp.web app mimicking mlserve's predict API, with a failing and a slow route."""

    url: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def hit(self, route: str) -> None:
        self.counts[route] = self.counts.get(route, 0) + 1

    def reset(self) -> None:
        self.counts.clear()
        self.bodies.clear()
        self.headers.clear()


def _app(state: FakeServer) -> Any:
    from aiohttp import web

    async def predict(request: web.Request) -> web.Response:
        state.hit("predict")
        body = await request.json()
        if len(state.bodies) < 50:
            state.bodies.append(body)
            state.headers.append(dict(request.headers))
        return web.json_response(
            {"prediction": "positive", "confidence": 0.9}, headers={"X-Process-Time": "0.250"}
        )

    async def batch(request: web.Request) -> web.Response:
        state.hit("batch")
        body = await request.json()
        state.bodies.append(body)
        return web.json_response({"predictions": [{"prediction": "x"}] * len(body["texts"])})

    async def fail(request: web.Request) -> web.Response:
        state.hit("fail")
        await request.read()
        return web.json_response(
            {"error": {"code": "prediction_failed", "message": "the model raised"}}, status=500
        )

    async def slow(request: web.Request) -> web.Response:
        state.hit("slow")
        await request.read()
        await asyncio.sleep(SLOW_S)  # an endpoint that takes a known time to answer
        return web.json_response({"ok": True})

    async def echo(request: web.Request) -> web.Response:
        state.hit("echo")
        state.headers.append(dict(request.headers))
        return web.json_response({"method": request.method})

    app = web.Application()
    app.router.add_post("/api/predict", predict)
    app.router.add_post("/api/predict/batch", batch)
    app.router.add_post("/fail", fail)
    app.router.add_post("/slow", slow)
    app.router.add_get("/echo", echo)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    """The fake API served from a background thread's event loop on a free loopback port."""
    from aiohttp import web

    state = FakeServer()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(state), access_log=None)
    started = threading.Event()

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.url = f"http://127.0.0.1:{port}"
        started.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="fake-api", daemon=True)
    thread.start()
    assert started.wait(10), "the fake API did not start"
    yield state
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def fake(server: FakeServer) -> FakeServer:
    server.reset()
    return server


@pytest.fixture
def loadtest(cli: Callable[..., Result], fake: FakeServer) -> Callable[..., Result]:
    """`mlserve loadtest --url <fake server> ARGS...`."""
    return lambda *args: cli("loadtest", "--url", fake.url, *args)


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------- success
def test_closed_loop_sends_exactly_the_requested_count(
    loadtest: Callable[..., Result], fake: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    result = loadtest("--requests", "200", "--concurrency", "4", "--json", out)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = report(out)
    assert data["requests"] == 200
    assert data["status_codes"] == {"200": 200}
    assert data["success"] == 1.0 and data["error_rate"] == 0.0
    assert fake.counts["predict"] == 201  # plus the one preflight request
    assert data["server_process_time"]["count"] == 200
    assert data["server_process_time"]["mean"] == 0.25
    assert data["config"]["concurrency"] == 4 and data["config"]["mode"] == "closed"
    # The human report: rates, both latency rows, the histogram.
    assert "200 requests in" in result.stdout
    assert "client" in result.stdout and "server" in result.stdout
    assert "200×200" in result.stdout
    assert "█" in result.stdout


def test_bodies_come_from_the_built_in_samples_with_the_model(
    loadtest: Callable[..., Result], fake: FakeServer
) -> None:
    from mlserve.loadtest import sample_texts

    result = loadtest("-n", "20", "--model", "sentiment@production", "--quiet")
    assert result.exit_code == 0, result.stderr
    texts = set(sample_texts())
    assert all(b["model"] == "sentiment@production" and b["text"] in texts for b in fake.bodies)
    assert len({b["text"] for b in fake.bodies}) > 1  # round-robin over the corpus
    assert fake.headers[0]["Content-Type"] == "application/json"
    assert fake.headers[0]["User-Agent"].startswith("mlserve-loadtest/")


def test_json_dash_prints_only_json_on_stdout(loadtest: Callable[..., Result]) -> None:
    result = loadtest("-n", "30", "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("requests", "rate", "throughput", "duration", "success", "status_codes"):
        assert key in data
    assert set(data["latencies"]) == {
        "min",
        "mean",
        "50th",
        "90th",
        "95th",
        "99th",
        "99.9th",
        "max",
    }
    assert "requests in" in result.stderr  # the human report moved to stderr


def test_open_loop_rate_runs_on_schedule(
    loadtest: Callable[..., Result], fake: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "rate.json"
    result = loadtest("--rate", "200", "--duration", "1s", "--json", out)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = report(out)
    assert 190 <= data["requests"] <= 201
    assert data["config"]["mode"] == "open" and data["config"]["rate"] == 200
    assert data["schedule"]["target_rate"] == 200
    # At most the window's last slot or two go unsent when the loop wakes late at the end (a
    # loaded CI machine); a schedule that falls behind drops far more.
    assert data["schedule"]["dropped"] <= 2
    assert 195 <= data["requests"] + data["schedule"]["dropped"] <= 201
    assert data["rate"] == pytest.approx(200, rel=0.1)
    assert "schedule: target 200 req/s" in result.stdout


def test_open_loop_with_a_request_count(loadtest: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "n.json"
    result = loadtest("--rate", "500", "--requests", "60", "--json", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert report(out)["requests"] == 60


def test_processes_merge_counts_exactly(
    loadtest: Callable[..., Result], fake: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "procs.json"
    result = loadtest("--processes", "2", "--requests", "301", "--concurrency", "4", "--json", out)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = report(out)
    assert data["requests"] == 301
    assert data["status_codes"] == {"200": 301}
    assert data["server_process_time"]["count"] == 301
    assert data["config"]["processes"] == 2
    assert fake.counts["predict"] == 302  # plus the preflight


def test_warmup_is_sent_but_not_counted(
    loadtest: Callable[..., Result], fake: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "warm.json"
    result = loadtest("--warmup", "300ms", "-n", "20", "--concurrency", "2", "--json", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert report(out)["requests"] == 20
    assert fake.counts["predict"] > 21 + 10  # 300 ms of unmeasured requests went out first


def test_batch_endpoint_sends_batches(loadtest: Callable[..., Result], fake: FakeServer) -> None:
    result = loadtest("--endpoint", "batch", "--batch-size", "5", "-n", "10", "-q")
    assert result.exit_code == 0, result.stderr
    assert fake.counts["batch"] == 11
    assert all(len(b["texts"]) == 5 for b in fake.bodies)


def test_custom_endpoint_with_headers_and_api_key(
    loadtest: Callable[..., Result], fake: FakeServer
) -> None:
    result = loadtest(
        "--endpoint", "custom", "--path", "/echo", "--method", "GET",
        "-H", "X-Team: ml", "--api-key", "k3y", "-n", "5", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert fake.counts["echo"] == 6
    assert fake.headers[-1]["X-Team"] == "ml"
    assert fake.headers[-1]["Authorization"] == "Bearer k3y"


def test_aiohttp_engine_gives_the_same_counts(
    loadtest: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "aio.json"
    result = loadtest("--engine", "aiohttp", "-n", "50", "--concurrency", "3", "--json", out, "-q")
    assert result.exit_code == 0, result.stderr
    data = report(out)
    assert data["requests"] == 50 and data["status_codes"] == {"200": 50}
    assert data["server_process_time"]["count"] == 50


def test_aiohttp_engine_without_the_extra_names_the_pip_command(
    loadtest: Callable[..., Result],
    fake: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    """aiohttp is an extra, not a dependency: without it, exit 2 and one line saying what to
    install, before any request is sent."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # `import aiohttp` raises ImportError
    result = loadtest("--engine", "aiohttp", "-n", "5", "-q")
    assert_user_error(result, "--engine aiohttp", "pip install 'mlserve-sklearn[aiohttp]'")
    assert fake.counts == {}


# ------------------------------------------------------------------------------------ gates
def test_failing_threshold_exits_99_and_names_it(
    loadtest: Callable[..., Result], tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    result = loadtest(
        "-n", "40", "--threshold", "p(50)<0.0001", "--max-p99-ms", "10000",
        "--threshold", "error_rate<=0", "--junit", junit,
    )  # fmt: skip
    assert result.exit_code == 99, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "threshold failed: p(50)<0.0001" in lines[0]
    assert "Traceback" not in result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own output
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["p(50)<0.0001"]


def test_passing_gates_exit_0(loadtest: Callable[..., Result]) -> None:
    result = loadtest(
        "-n", "40", "--max-p50-ms", "5000", "--max-p95-ms", "5000", "--max-p99-ms", "5000",
        "--min-rps", "1", "--max-error-rate", "0", "--threshold", "avg<5000", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_server_errors_count_against_the_error_rate(
    loadtest: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "fail.json"
    result = loadtest(
        "--endpoint", "custom", "--path", "/fail", "--body", '{"q": "{{text}}"}',
        "-n", "25", "--max-error-rate", "0.1", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 99, (result.stdout, result.stderr)
    assert "--max-error-rate 0.1" in result.stderr
    data = report(out)
    assert data["status_codes"] == {"500": 25} and data["error_rate"] == 1.0
    assert data["errors"] == ["HTTP 500: prediction_failed: the model raised"]
    assert "HTTP 500: prediction_failed: the model raised" in result.stdout


def test_a_run_without_one_success_and_no_gate_exits_1_naming_the_error(
    loadtest: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "fail.json"
    result = loadtest(
        "--endpoint", "custom", "--path", "/fail", "--body", '{"q": "{{text}}"}',
        "-n", "12", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "no request to" in result.stderr and "succeeded: 12 of 12 answered 500" in result.stderr
    assert "prediction_failed" in result.stderr
    assert report(out)["status_codes"] == {"500": 12}  # the report is still written


def test_slow_endpoint_latency_is_measured(loadtest: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "slow.json"
    result = loadtest(
        "--endpoint", "custom", "--path", "/slow", "--body", "{}",
        "-n", "8", "--concurrency", "4", "--json", out, "--threshold", "p(50)<1",
    )  # fmt: skip
    assert result.exit_code == 99
    data = report(out)
    assert data["latencies"]["min"] >= SLOW_S * 1000
    assert data["latencies"]["50th"] < 2000


def test_open_loop_over_capacity_counts_queueing_and_reports_late_and_dropped(
    loadtest: Callable[..., Result], fake: FakeServer, tmp_path: Path
) -> None:
    # /slow takes SLOW_S; with 2 in flight it serves at most 2 / SLOW_S = 40 req/s, far below
    # the 205 req/s asked for (205 × 0.5 s = 102.5: 103 scheduled starts, none on the edge).
    rate, in_flight, window_s = 205, 2, 0.5
    out = tmp_path / "overload.json"
    result = loadtest(
        "--endpoint", "custom", "--path", "/slow", "--body", "{}", "--rate", str(rate),
        "--max-in-flight", str(in_flight), "--duration", "500ms", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = report(out)
    sent, schedule = data["requests"], data["schedule"]

    # Request k (in schedule order) starts only once k-1 earlier ones are answered, each taking
    # SLOW_S on at most `in_flight` at a time, but was due at k / rate: counted from its
    # scheduled start, its latency is at least this.
    def floor_ms(k: int) -> float:
        answered_by = (math.ceil((k - 1) / in_flight) + 1) * SLOW_S
        return (answered_by - k / rate) * 1000.0

    assert data["status_codes"] == {"200": sent}
    # At least 40 % of the capacity is used (the suite runs on every core, so the fake server
    # shares the CPU: a lane may lose a slot or two); and sending stops at the end of the
    # window: no lane starts more than window / SLOW_S requests.
    capacity = in_flight * round(window_s / SLOW_S)
    assert 0.4 * capacity <= sent <= capacity
    assert fake.counts["slow"] == sent + 1  # plus the preflight
    assert data["duration"] < 3 * window_s * 1000  # sending all 103 would take over 2.5 s
    # Queueing is in the latencies: they grow far beyond the service time.
    assert data["latencies"]["min"] >= SLOW_S * 1000
    assert data["latencies"]["max"] >= floor_ms(sent - 1) > 3 * SLOW_S * 1000
    # Nearest-rank median: at least half the samples are from requests k >= (sent - 1) // 2.
    assert data["latencies"]["50th"] >= min(floor_ms(k) for k in range((sent - 1) // 2, sent))
    assert schedule["max_lag"] >= floor_ms(sent - 1) - SLOW_S * 1000
    # Every request after the first `in_flight` waited for a slot: sent late, and counted so;
    # the scheduled starts never sent are counted as dropped.
    assert sent - in_flight <= schedule["late"] <= sent
    assert schedule["dropped"] == math.ceil(window_s * rate) - sent
    assert (
        f"schedule: target {rate} req/s, {schedule['late']} sent more than 5 ms late, "
        f"{schedule['dropped']} never sent"
    ) in result.stdout


# ----------------------------------------------------------------------- cannot test at all
def test_refused_port_exits_1(cli: Callable[..., Result]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("loadtest", "--url", url, "-n", "10")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: cannot reach")
    assert "connection refused" in result.stderr and "\n" not in result.stderr.strip()


def test_timeout_at_preflight_exits_1(loadtest: Callable[..., Result]) -> None:
    result = loadtest(
        "--endpoint", "custom", "--path", "/slow", "--body", "{}", "--timeout", "0.01", "-n", "3"
    )  # fmt: skip
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "cannot reach" in result.stderr and "timeout" in result.stderr


# ----------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--threshold", "p(95)<<200"], "invalid --threshold 'p(95)<<200'"),
        (["--threshold", "latency<5"], "invalid --threshold"),
        (["--duration", "10 minutes"], "invalid --duration '10 minutes'"),
        (["--duration", "-5s"], "invalid --duration"),
        (["--warmup", "soon"], "invalid --warmup"),
        (["--url", "ftp://127.0.0.1:21"], "only http:// and https://"),
        (["--rate", "10", "--concurrency", "2"], "exclude each other"),
        (["--max-in-flight", "5"], "only applies with --rate"),
        (["--endpoint", "v2"], "--model"),
        (["--endpoint", "custom"], "--path"),
        (["--header", "no colon"], "--header"),
        (["--max-error-rate", "2"], "--max-error-rate"),
        (["--processes", "0"], "--processes"),
        (["--data", "missing.txt"], "does not exist"),
        (["--duration", "2h"], "--duration"),
        (["--json", "no/such/dir/out.json"], "does not exist"),
        (["--junit", "no/such/dir/junit.xml"], "does not exist"),
    ],
)
def test_usage_errors_exit_2(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    args: list[str],
    fragment: str,
) -> None:
    # Nothing listens on port 9: a usage error must be found before any request.
    result = cli(
        "loadtest", *(["--url", "http://127.0.0.1:9"] if "--url" not in args else []), *args
    )
    assert_user_error(result, fragment)


def test_engine_stops_when_asked_and_keeps_what_it_measured(fake: FakeServer) -> None:
    from mlserve.loadtest import LoadPlan, Payloads, build_target, run_engine

    target = build_target(url=fake.url, payloads=Payloads(texts=("hello",)))
    plan = LoadPlan(concurrency=2, duration=30.0)
    result = run_engine(target, plan, should_stop=lambda: True)  # asked at the first tick
    assert result.interrupted
    assert 0 < result.requests == fake.counts["predict"]
    assert result.duration_s < 5


@pytest.mark.parametrize(
    "handler", [signal.SIG_IGN, signal.default_int_handler], ids=["ignored", "default"]
)
def test_an_embedded_run_gives_back_the_callers_ctrl_c_handler(
    fake: FakeServer, handler: Any
) -> None:
    # While it runs, Ctrl-C stops the run; afterwards the caller's own handling is back.
    from mlserve.loadtest import LoadPlan, Payloads, build_target, run_engine

    target = build_target(url=fake.url, payloads=Payloads(texts=("hello",)))
    previous = signal.signal(signal.SIGINT, handler)
    try:
        run_engine(target, LoadPlan(concurrency=1, requests=3))
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
