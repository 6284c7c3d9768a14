"""Exit codes of the commands that talk to a server, when it fails or does not answer in time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import Result

# (status, content type, body) per path; anything else is a 404.
Routes = dict[str, tuple[int, str, bytes]]


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: Routes


class _Handler(BaseHTTPRequestHandler):
    server: _FakeServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        status, content_type, body = self.server.routes.get(
            self.path, (404, "text/plain", b"no such route")
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


def json_route(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


@pytest.fixture
def http_server() -> Iterator[Callable[[Routes], str]]:
    """Serve fixed answers on a free loopback port from a thread; returns the base URL."""
    started: list[tuple[_FakeServer, threading.Thread]] = []

    def serve(routes: Routes) -> str:
        server = _FakeServer(("127.0.0.1", 0), _Handler)
        server.routes = routes
        thread = threading.Thread(target=server.serve_forever, name="fake-mlserve", daemon=True)
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def assert_failed(result: Result, *fragments: str) -> None:
    """Exit 1 with one line on stderr naming the fragments, and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------------------- predict
@pytest.mark.parametrize(
    ("status", "code"), [(500, "prediction_failed"), (503, "overloaded")], ids=["500", "503"]
)
def test_predict_exits_1_with_the_servers_message_on_a_5xx(
    cli: Callable[..., Result],
    http_server: Callable[[Routes], str],
    status: int,
    code: str,
) -> None:
    body = {"error": {"code": code, "message": "the model raised ValueError", "request_id": "r1"}}
    url = http_server({"/api/predict": json_route(status, body)})
    result = cli("predict", "I loved it", "--url", url)
    assert_failed(result, f"{status} {code}", "the model raised ValueError")
    assert result.stdout == ""


def test_predict_exits_1_on_a_5xx_that_is_not_json(
    cli: Callable[..., Result], http_server: Callable[[Routes], str]
) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>\n<p>upstream down</p></body></html>"
    url = http_server({"/api/predict": (502, "text/html", page)})
    assert_failed(cli("predict", "I loved it", "--url", url), "502", "upstream down")


def test_predict_exits_1_when_the_timeout_expires(
    cli: Callable[..., Result], silent_url: str
) -> None:
    started = time.monotonic()
    result = cli("predict", "I loved it", "--url", silent_url, "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert_failed(result, f"no answer from {silent_url} in time")
    assert elapsed < 5.0, elapsed


# ---------------------------------------------------------------------------- health-check
@pytest.mark.parametrize(
    "answer",
    [
        json_route(503, {"ready": False, "models": {"iris": "loading"}}),
        (503, "text/plain", b"Service Unavailable"),  # a proxy in front of a server not up yet
    ],
    ids=["mlserve", "proxy"],
)
def test_health_check_exits_1_when_ready_answers_503(
    cli: Callable[..., Result], http_server: Callable[[Routes], str], answer: tuple[int, str, bytes]
) -> None:
    url = http_server({"/api/ready": answer})
    result = cli("health-check", "--url", url, "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert (data["healthy"], data["status"]) == (False, "not ready")
    if answer[1] == "application/json":
        assert data["models"] == [{"name": "iris", "status": "loading"}]


def test_health_check_exits_0_when_ready_answers_200(
    cli: Callable[..., Result], http_server: Callable[[Routes], str]
) -> None:
    # The fake is a fair stand-in: it passes when it should.
    url = http_server(
        {"/api/ready": json_route(200, {"ready": True, "models": {"iris": "loaded"}})}
    )
    assert cli("health-check", "--url", url, "--quiet").exit_code == 0


def test_health_check_exits_1_when_the_deep_check_answers_500(
    cli: Callable[..., Result], http_server: Callable[[Routes], str]
) -> None:
    body = {"error": {"code": "internal_error", "message": "internal server error"}}
    url = http_server({"/api/health": json_route(500, body)})
    result = cli("health-check", "--url", url, "--deep", "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert (data["status"], data["error"]) == ("error", "500 internal_error: internal server error")


def test_health_check_exits_1_on_a_timeout(cli: Callable[..., Result], silent_url: str) -> None:
    started = time.monotonic()
    result = cli("health-check", "--url", silent_url, "--timeout", "0.5", "--json")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert (data["healthy"], data["status"]) == (False, "unreachable")
    assert data["error"].startswith(f"no answer from {silent_url} in time")
    assert "Traceback" not in result.stderr
    assert elapsed < 5.0, elapsed
