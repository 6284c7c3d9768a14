"""`mlserve rollout start|status|abort` and the client's rollout methods, against a fake server
on loopback that answers canned RolloutInfo bodies built from the schema."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from rich.console import Console
from support.net import free_port
from support.probe import HEAVY, imported
from typer.testing import Result

from mlserve.cli import rollout_cmd
from mlserve.cli.rollout_cmd import build_request, parse_guards, parse_steps
from mlserve.client import AsyncClient, Client
from mlserve.errors import ServerResponseError, ServerUnreachableError, UsageError
from mlserve.schemas.rollouts import RolloutGuards, RolloutInfo, RolloutRequest

PATH = "/api/models/iris/rollout"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------- canned answers
def rollout_json(status: str = "running", **changes: Any) -> dict[str, Any]:
    """A RolloutInfo body of iris 1 -> 2 at step 2 of 4 (25 %), validated by the schema."""
    ended = status != "running"
    events = [
        {"at": T0, "event": "started", "step": 0, "weight": 5.0, "detail": ""},
        {"at": T0 + timedelta(minutes=5), "event": "step", "step": 1, "weight": 25.0},
    ]
    if ended:
        events.append({"at": T0 + timedelta(minutes=9), "event": status, "step": 1, "weight": 0.0})
    body: dict[str, Any] = {
        "model": "iris",
        "id": "r-1",
        "status": status,
        "alias": "production",
        "baseline": 1,
        "candidate": 2,
        "steps": [5, 25, 50, 100],
        "step": 3 if status == "promoted" else 1,
        "weight": 0.0 if ended else 25.0,
        "step_seconds": 300,
        "min_requests": 200,
        "min_labels": 50,
        "guards": {"max_error_rate": 0.01, "max_p99_ms": 250, "max_accuracy_drop": 0.02},
        "started_at": T0,
        "step_started_at": T0 + timedelta(minutes=5),
        "ended_at": T0 + timedelta(minutes=9) if ended else None,
        "next_step_in_s": None if ended else 133.0,
        "reason": "p99 latency 412 ms over 250 ms" if status == "rolled_back" else None,
        "figures": {
            "error_rate": {
                "limit": 0.01,
                "status": "ok",
                "candidate": {"value": 0.004, "n": 812},
                "baseline": {"value": 0.003, "n": 2410},
            },
            "p99_ms": {
                "limit": 250,
                "status": "breached" if status == "rolled_back" else "ok",
                "candidate": {"value": 182.0, "n": 812},
                "baseline": {"value": 170.5, "n": 2410},
            },
            "accuracy": {
                "limit": 0.02,
                "status": "waiting",
                "candidate": {"value": None, "n": 12},
                "baseline": {"value": 0.931, "n": 400},
            },
        },
        "events": events,
    }
    body.update(changes)
    return RolloutInfo.model_validate(body).model_dump(mode="json")


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# ---------------------------------------------------------------------------- the fake server
@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeServer(ThreadingHTTPServer):
    """Answers /api/models/iris/rollout from a script per method: each request takes the next
    answer, the last one repeats. Records every request it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []
        self.script: dict[str, list[tuple[int, Any]]] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method: str, *answers: tuple[int, Any]) -> None:
        self.script[method] = list(answers)

    def take(self, method: str) -> tuple[int, Any]:
        with self.lock:
            answers = self.script.get(method)
            if not answers:
                return 405, error("method_not_allowed", "method not allowed")
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def requests(self, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if method is None or s.method == method]


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append(
                Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
            )
        if self.path == PATH:
            status, body = self.server.take(self.command)
        else:
            status, body = 404, error("model_not_found", f"no route {self.path}")
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-rollouts", daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------------------- client methods
def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://mlserve.test", api_key="k", transport=httpx.MockTransport(handler))


def test_client_start_rollout_puts_only_the_fields_set_and_parses_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=rollout_json())

    request = RolloutRequest(candidate=2, steps=[10, 100], guards=RolloutGuards(max_p99_ms=250))
    with mock_client(handler) as client:
        info = client.start_rollout("iris", request)

    assert (seen[0].method, seen[0].url.path) == ("PUT", PATH)
    assert json.loads(seen[0].content) == {
        "candidate": 2,
        "steps": [10.0, 100.0],
        "guards": {"max_p99_ms": 250.0},
    }
    assert seen[0].headers["authorization"] == "Bearer k"
    assert info == RolloutInfo.model_validate(rollout_json())


def test_client_reads_and_aborts_a_rollout() -> None:
    answers = {"GET": rollout_json(), "DELETE": rollout_json("aborted", reason="by admin")}
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == PATH
        methods.append(request.method)
        return httpx.Response(200, json=answers[request.method])

    with mock_client(handler) as client:
        assert client.rollout("iris").status == "running"
        aborted = client.abort_rollout("iris")
    assert methods == ["GET", "DELETE"]
    assert (aborted.status, aborted.reason) == ("aborted", "by admin")


@pytest.mark.parametrize(
    ("status", "code"),
    [(409, "rollout_conflict"), (404, "rollout_not_found"), (422, "invalid_request")],
)
def test_client_rollout_errors_carry_the_servers_code_and_message(status: int, code: str) -> None:
    body = error(code, "the server's own words")
    with mock_client(lambda r: httpx.Response(status, json=body)) as client:
        for call in (
            lambda: client.start_rollout("iris", RolloutRequest(candidate=2)),
            lambda: client.rollout("iris"),
            lambda: client.abort_rollout("iris"),
        ):
            with pytest.raises(ServerResponseError) as caught:
                call()
            assert (caught.value.status_code, caught.value.code) == (status, code)
            assert caught.value.message == f"{status} {code}: the server's own words"


def test_client_rejects_a_body_that_is_not_a_rollout() -> None:
    with mock_client(lambda r: httpx.Response(200, json={"model": "iris"})) as client:
        with pytest.raises(ServerResponseError, match="not a RolloutInfo"):
            client.rollout("iris")


def test_async_client_rollout_methods() -> None:
    seen: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, json.loads(request.content) if request.content else None))
        if request.method == "DELETE":
            return httpx.Response(409, json=error("rollout_conflict", "it already ended"))
        return httpx.Response(201 if request.method == "PUT" else 200, json=rollout_json())

    async def go() -> tuple[RolloutInfo, RolloutInfo]:
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://mlserve.test", transport=transport) as client:
            started = await client.start_rollout("iris", RolloutRequest(candidate=2, alias="b"))
            current = await client.rollout("iris")
            with pytest.raises(ServerResponseError, match="409 rollout_conflict"):
                await client.abort_rollout("iris")
            return started, current

    started, current = asyncio.run(go())
    assert started == current == RolloutInfo.model_validate(rollout_json())
    assert seen == [("PUT", {"candidate": 2, "alias": "b"}), ("GET", None), ("DELETE", None)]


# ---------------------------------------------------------------------------- parsing flags
def test_steps_are_percentages_separated_by_commas() -> None:
    assert parse_steps("5, 25,50%,100") == [5.0, 25.0, 50.0, 100.0]
    for bad, fragment in [
        ("5,,100", "empty step"),
        ("5,x", "'x' is not a number"),
        ("", "give percentages"),
    ]:
        with pytest.raises(UsageError, match=fragment):
            parse_steps(bad)


def test_guards_map_to_the_schema_fields_off_is_null_and_the_last_one_wins() -> None:
    assert parse_guards(["error-rate=0.05", "p99-ms=250", "accuracy-drop=off", "p99-ms=300"]) == {
        "max_error_rate": 0.05,
        "max_p99_ms": 300.0,
        "max_accuracy_drop": None,
    }


def test_an_invalid_value_names_its_flag() -> None:
    with pytest.raises(UsageError, match="^--steps: Input should be less than or equal to 100$"):
        build_request({"candidate": 2, "steps": [50.0, 250.0]})
    with pytest.raises(UsageError, match="^--guard p99-ms: Input should be greater than 0$"):
        build_request({"candidate": 2, "guards": {"max_p99_ms": 0.0}})


# ---------------------------------------------------------------------------- start
def test_start_sends_the_flags_as_a_rollout_request_and_prints_the_servers_answer(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("PUT", (201, rollout_json()))
    result = cli(
        "rollout", "start", "iris", "--candidate", "2", "--steps", "10,50,100",
        "--step-seconds", "60", "--min-requests", "50", "--min-labels", "20",
        "--alias", "staging", "--guard", "error-rate=0.05", "--guard", "p99-ms=250",
        "--guard", "accuracy-drop=off", "--url", fake.url, "--api-key", "admin-key", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, (result.stdout, result.stderr)
    (put,) = fake.requests()
    assert (put.method, put.path) == ("PUT", PATH)
    assert put.headers["authorization"] == "Bearer admin-key"
    assert put.body == {
        "candidate": 2,
        "alias": "staging",
        "steps": [10.0, 50.0, 100.0],
        "step_seconds": 60.0,
        "min_requests": 50,
        "min_labels": 20,
        "guards": {"max_error_rate": 0.05, "max_p99_ms": 250.0, "max_accuracy_drop": None},
    }
    assert json.loads(result.stdout) == rollout_json()
    assert "mlserve rollout status iris --watch" in result.stderr


def test_start_with_only_a_candidate_leaves_the_defaults_to_the_server(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("PUT", (201, rollout_json()))
    result = cli("rollout", "start", "iris", "--candidate", "2", "--url", fake.url)

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert fake.requests()[0].body == {"candidate": 2}
    assert "iris" in result.stdout and "v2 (candidate) vs v1 (baseline)" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--guard", "latency=5"], "unknown guard 'latency' (one of error-rate, p99-ms"),
        (["--guard", "p99-ms=fast"], "--guard p99-ms: 'fast' is not a number"),
        (["--guard", "p99-ms"], "expected NAME=VALUE"),
        (["--guard", "error-rate=2"], "--guard error-rate: Input should be less than or equal"),
        (["--guard", "p99-ms=nan"], "not a finite number"),
        (["--steps", "50,0,100"], "--steps: Input should be greater than 0"),
        (["--steps", "5,150"], "--steps: Input should be less than or equal to 100"),
        (["--step-seconds", "0"], "--step-seconds: Input should be greater than or equal to 0.1"),
        (["--alias", "Prod!"], "--alias: String should match pattern"),
        (["--candidate", "0"], "--candidate: Input should be greater than or equal to 1"),
    ],
)
def test_start_refuses_bad_flags_before_asking_the_server(
    cli: Callable[..., Result], fake: FakeServer, args: list[str], fragment: str
) -> None:
    base = ["rollout", "start", "iris", "--url", fake.url]
    result = cli(*base, *(args if "--candidate" in args else ["--candidate", "2", *args]))
    assert_one_line_error(result, 2, fragment)
    assert fake.requests() == []


def test_an_invalid_model_name_is_a_usage_error(cli: Callable[..., Result]) -> None:
    result = cli("rollout", "status", "no/such", "--url", "http://127.0.0.1:9")
    assert_one_line_error(result, 2, "invalid model name 'no/such'")


def test_start_refused_by_the_server_is_one_line_and_exit_1(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("PUT", (409, error("rollout_conflict", "a rollout of iris is running")))
    result = cli("rollout", "start", "iris", "--candidate", "2", "--url", fake.url)
    assert_one_line_error(result, 1, "409 rollout_conflict: a rollout of iris is running")
    assert result.stdout == ""

    fake.answer("PUT", (404, error("version_not_found", "iris has no version 9")))
    result = cli("rollout", "start", "iris", "--candidate", "9", "--url", fake.url)
    assert_one_line_error(result, 1, "404 version_not_found: iris has no version 9")


# ---------------------------------------------------------------------------- status
def test_status_shows_versions_steps_timing_guard_figures_and_events(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json()))
    result = cli("rollout", "status", "iris", "--url", fake.url)

    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = result.stdout
    for fragment in (
        "iris: v2 (candidate) vs v1 (baseline), alias production  running",
        "(step 2/4)",
        "weight  25% of traffic to v2; next step in 2m 13s",
        "(a step lasts ≥ 5m 00s and ≥ 200 candidate requests)",
        "≤ 1.00%",  # the error-rate limit
        "0.40% (812)",  # candidate error rate (n)
        "0.30% (2410)",
        "182.0 ms (812)",
        "170.5 ms (2410)",
        "drop ≤ 0.020",
        "- (12)",  # no accuracy figure for the candidate yet, 12 labels
        "0.931 (400)",
        "waiting",
        "12:05:00Z",  # the latest event
    ):
        assert fragment in out, (fragment, out)
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert rows["error-rate"].split("│")[5].strip() == "ok"
    assert rows["accuracy-drop"].split("│")[5].strip() == "waiting"


def test_status_of_a_rolled_back_rollout_shows_the_breach_and_the_reason(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json("rolled_back")))
    result = cli("rollout", "status", "iris", "--url", fake.url)

    assert result.exit_code == 0, (result.stdout, result.stderr)  # shown: not --wait
    assert "rolled back" in result.stdout
    assert "breached" in result.stdout
    assert "reason  p99 latency 412 ms over 250 ms" in result.stdout
    assert "ended   12:09:00Z (after 9m 00s); all traffic back on v1" in result.stdout


def test_status_json_is_the_servers_rollout_info(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json()))
    result = cli("rollout", "status", "iris", "--url", fake.url, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == rollout_json()


def test_status_without_a_rollout_is_one_line_and_exit_1(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (404, error("rollout_not_found", "iris has no rollout")))
    result = cli("rollout", "status", "iris", "--url", fake.url, "--json")
    assert_one_line_error(result, 1, "404 rollout_not_found: iris has no rollout")
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["start", "status", "abort"])
def test_an_unreachable_server_is_one_line_and_exit_1(
    cli: Callable[..., Result], command: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    extra = ["--candidate", "2"] if command == "start" else []
    result = cli("rollout", command, "iris", *extra, "--url", url)
    assert_one_line_error(result, 1, f"cannot reach {url}: connection refused")


# ---------------------------------------------------------------------------- --wait, --watch
def test_wait_polls_until_promoted_and_exits_0(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    later = rollout_json(step=2, weight=50.0)
    fake.answer("GET", (200, rollout_json()), (200, later), (200, rollout_json("promoted")))
    result = cli("rollout", "status", "iris", "--wait", "--interval", "0.1", "--url", fake.url)

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert len(fake.requests("GET")) == 3
    assert "promoted" in result.stdout  # the final view
    log = result.stderr.splitlines()  # a line per change
    assert len(log) == 3, log
    assert "iris: running, step 2/4 (25% to v2)" in log[0]
    assert "iris: running, step 3/4 (50% to v2)" in log[1]
    assert "iris: promoted at step 4/4" in log[2]
    assert "ended   12:09:00Z (after 9m 00s); production → v2" in result.stdout


@pytest.mark.parametrize("outcome", ["rolled_back", "aborted"])
def test_wait_exits_1_when_the_rollout_is_rolled_back_or_aborted(
    cli: Callable[..., Result], fake: FakeServer, outcome: str
) -> None:
    fake.answer("GET", (200, rollout_json()), (200, rollout_json(outcome)))
    result = cli(
        "rollout", "status", "iris", "--wait", "--json", "--interval", "0.1", "--url", fake.url
    )

    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert json.loads(result.stdout) == rollout_json(outcome)  # the final state
    assert f"rollout of iris {outcome.replace('_', ' ')}" in result.stderr
    if outcome == "rolled_back":
        assert "p99 latency 412 ms over 250 ms" in result.stderr
    assert "Traceback" not in result.stderr


def test_wait_exits_124_when_the_rollout_is_still_running_at_the_timeout(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json()))
    started = time.monotonic()
    result = cli(
        "rollout", "status", "iris", "--wait", "--json", "--interval", "0.1",
        "--timeout", "0.6", "--url", fake.url,
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.exit_code == 124, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["status"] == "running"  # the last state seen
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the rollout is still running after 1s: iris: running")
    assert 0.5 < elapsed < 5.0, elapsed
    assert len(fake.requests("GET")) >= 3


def test_watch_outside_a_terminal_logs_changes_and_exits_0_whatever_the_outcome(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json()), (200, rollout_json("rolled_back")))
    result = cli("rollout", "status", "iris", "--watch", "--interval", "0.1", "--url", fake.url)

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "rolled back" in result.stdout and "breached" in result.stdout
    assert "iris: rolled back at step 2/4 (p99 latency 412 ms over 250 ms)" in result.stderr


def test_watch_in_a_terminal_draws_a_live_view(
    cli: Callable[..., Result], fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, highlight=False)
    monkeypatch.setattr(rollout_cmd, "console", terminal)
    fake.answer("GET", (200, rollout_json()), (200, rollout_json("promoted")))
    result = cli(
        "rollout", "status", "iris", "--watch", "--wait", "--interval", "0.1", "--url", fake.url
    )

    assert result.exit_code == 0, (result.stdout, result.stderr)
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # redrawn in place, with styles
    assert drawn.count("guards") >= 2  # the first view, then the final one
    assert "promoted" in drawn and "182.0 ms (812)" in drawn
    assert result.stderr == ""


def test_watch_and_json_do_not_combine(cli: Callable[..., Result]) -> None:
    result = cli("rollout", "status", "iris", "--watch", "--json", "--url", "http://127.0.0.1:9")
    assert_one_line_error(result, 2, "--watch draws a live view")


@pytest.mark.parametrize(
    "down",
    [
        (503, error("rollouts_unavailable", "the rollout store is down")),
        (429, error("rate_limited", "too many requests")),
    ],
    ids=["503", "429"],
)
def test_wait_rides_out_a_short_outage_but_not_a_first_failure(
    cli: Callable[..., Result], fake: FakeServer, down: tuple[int, dict[str, Any]]
) -> None:
    status, code = down[0], down[1]["error"]["code"]
    fake.answer("GET", (200, rollout_json()), down, down, (200, rollout_json("promoted")))
    args = ("rollout", "status", "iris", "--wait", "--interval", "0.1", "--url", fake.url)
    result = cli(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert f"{status} {code}: {down[1]['error']['message']}; retrying" in result.stderr

    fake.answer("GET", down)
    assert_one_line_error(cli(*args), 1, f"{status} {code}")


def test_following_gives_up_after_a_minute_out_of_reach() -> None:
    now = [0.0]
    answers: list[RolloutInfo | Exception] = [RolloutInfo.model_validate(rollout_json())]
    unreachable = ServerUnreachableError("cannot reach http://x: connection refused")
    notes: list[str | None] = []

    def fetch(left: float) -> RolloutInfo:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(seconds: float) -> None:
        now[0] += seconds
        answers[:] = [unreachable]  # out of reach from the second poll on

    with pytest.raises(ServerUnreachableError):
        rollout_cmd.follow(
            fetch,
            interval=2.0,
            limit=3600.0,
            show=lambda info, note: notes.append(note),
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert rollout_cmd.OUTAGE_S <= now[0] <= rollout_cmd.OUTAGE_S + 2.0
    assert notes[0] is None and all("retrying" in str(n) for n in notes[1:]), notes


def test_wait_fails_when_another_rollout_replaced_the_one_followed(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("GET", (200, rollout_json()), (200, rollout_json(id="r-2")))
    result = cli("rollout", "status", "iris", "--wait", "--interval", "0.1", "--url", fake.url)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the progress line of the first poll
    assert last == (
        "error: rollout r-1 of iris is no longer the latest: rollout r-2 (running) replaced it"
    )


def as_from_a_terminal() -> None:
    """In the child before exec: SIGINT delivered and handled as from a shell. A child
    inherits its parent thread's signal mask and ignored signals, and a test run in the same
    pytest worker earlier can leave SIGINT blocked there (seen in CI: the command never saw
    the Ctrl-C and the test timed out)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_watching_quietly_with_exit_130(fake: FakeServer) -> None:
    fake.answer("GET", (200, rollout_json()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlserve", "rollout", "status", "iris", "--watch", "--wait",
         "--interval", "0.2", "--url", fake.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=as_from_a_terminal,
    )  # fmt: skip
    with proc:  # its pipes are closed whatever happens
        try:
            deadline = time.monotonic() + 30
            while len(fake.requests("GET")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for the command to be polling, bounded
            assert len(fake.requests("GET")) >= 2, proc.poll()
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "error:" not in stderr, stderr


# ---------------------------------------------------------------------------- abort
def test_abort_deletes_the_rollout_and_shows_it_aborted(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("DELETE", (200, rollout_json("aborted", reason="aborted by an admin")))
    result = cli("rollout", "abort", "iris", "--url", fake.url, "--api-key", "admin-key")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    (delete,) = fake.requests()
    assert (delete.method, delete.path) == ("DELETE", PATH)
    assert delete.headers["authorization"] == "Bearer admin-key"
    assert "aborted" in result.stdout and "aborted by an admin" in result.stdout
    assert "production stays on v1" in result.stderr


def test_abort_json_is_the_servers_rollout_info(
    cli: Callable[..., Result], fake: FakeServer
) -> None:
    fake.answer("DELETE", (200, rollout_json("aborted")))
    result = cli("rollout", "abort", "iris", "--url", fake.url, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == rollout_json("aborted")


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (409, "rollout_conflict", "the rollout of iris already ended (promoted)"),
        (404, "rollout_not_found", "iris has no rollout"),
        (403, "forbidden", "this needs an admin key"),
    ],
)
def test_abort_refused_is_one_line_and_exit_1(
    cli: Callable[..., Result], fake: FakeServer, status: int, code: str, message: str
) -> None:
    fake.answer("DELETE", (status, error(code, message)))
    result = cli("rollout", "abort", "iris", "--url", fake.url)
    assert_one_line_error(result, 1, f"{status} {code}: {message}")
    assert result.stdout == ""


# ---------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("command", "fragments"),
    [
        ("start", ("Exit codes: 0 started", "409", "2 invalid flags", "NAME=VALUE")),
        ("status", ("0 shown (with --wait: promoted)", "1 rolled back or aborted", "124", "130")),
        ("abort", ("Exit codes: 0 aborted", "(409)")),
    ],
)
def test_each_command_explains_itself_and_its_exit_codes(
    cli: Callable[..., Result], command: str, fragments: tuple[str, ...]
) -> None:
    result = cli("rollout", command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_status_against_a_server_imports_neither_fastapi_nor_sklearn(fake: FakeServer) -> None:
    fake.answer("GET", (200, rollout_json()))
    heavy, code = imported(HEAVY, "rollout", "status", "iris", "--url", fake.url)
    assert (heavy, code) == ("", "0")
