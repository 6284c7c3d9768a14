"""Bounded request heads on a real `mlserve serve` (issue 18 item 1), driven with raw sockets:
431/414 in the JSON error shape, the connection closed at once, and no memory held for an
oversized head; plus the connection cap (server.limit_concurrency)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.data import populate
from support.servers import MlserveProcess, running
from support.wait import wait_for

from mlserve.config import load_settings
from mlserve.errors import ConfigError
from mlserve.server.run import bind_socket, run, uvicorn_options

CHUNK = 65_536
PREDICT_BODY = json.dumps({"model": "sentiment", "text": "good"}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    root = tmp_path_factory.mktemp("header-limits")
    populate(root / "registry")
    with running(root / "registry", root / "home") as started:
        yield started


def head(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket, deadline: float, *, until_closed: bool = True) -> bytes:
    """What the server sends until it closes the connection (b"<closed>" appended then), or,
    with until_closed=False, until one whole response has arrived; at most until `deadline`."""
    received = b""
    while time.monotonic() < deadline:
        if not until_closed and complete(received):
            return received
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65_536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            return received + b"<closed>"
        received += data
    return received


def complete(raw: bytes) -> bool:
    if b"\r\n\r\n" not in raw:
        return False
    headers, body = raw.split(b"\r\n\r\n", 1)
    for line in headers.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def exchange(port: int, request: bytes, *, close_expected: bool = True) -> tuple[int, dict, bytes]:
    """Send `request` whole; (status, JSON body or {}, raw answer), reading until the server
    closes (close_expected) or one response has arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        raw = read_answer(sock, time.monotonic() + 10, until_closed=close_expected)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
    body = b""
    if b"\r\n\r\n" in raw:
        headers, rest = raw.split(b"\r\n\r\n", 1)
        length = re.search(rb"(?i)content-length: *(\d+)", headers)
        body = rest[: int(length.group(1))] if length else b""
    return status, (json.loads(body) if body.startswith(b"{") else {}), raw


def flood(port: int, prefix: bytes, total: int, budget_s: float) -> tuple[bytes, int, float]:
    """Send `prefix` then an endless header value in chunks, up to `total` bytes or `budget_s`
    seconds, stopping as soon as the server answers or closes; (answer, bytes sent, seconds to
    the answer)."""
    started = time.monotonic()
    deadline = started + budget_s
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(prefix)
        sent += len(prefix)
        chunk = b"a" * CHUNK
        try:
            while sent < total and time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed: read what it answered
            pass
        elapsed = time.monotonic() - started
        answer = read_answer(sock, min(deadline, time.monotonic() + 5))
    return answer, sent, elapsed


def assert_rejected(raw: bytes, status: int, code: str) -> None:
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert raw.endswith(b"<closed>"), "the server must close the connection"
    headers, body = raw.removesuffix(b"<closed>").split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in headers.lower()
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] is None
    assert error["message"]


def test_a_100_kb_header_is_refused_with_431_at_once(server: MlserveProcess) -> None:
    prefix = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    answer, sent, elapsed = flood(server.port, prefix, 100 * 1024, budget_s=10)
    assert_rejected(answer, 431, "headers_too_large")
    assert elapsed < 2.0


def test_the_fast_lane_refuses_an_oversized_head_too(server: MlserveProcess) -> None:
    request = head("POST", "/api/predict", [("X-Big", "a" * 100_000)], PREDICT_BODY)
    status, _, raw = exchange(server.port, request)
    assert status == 431
    assert_rejected(raw, 431, "headers_too_large")


def test_many_small_headers_over_the_total_are_431(server: MlserveProcess) -> None:
    headers = [(f"X-H{i}", "b" * 7000) for i in range(10)]  # each line fine, 70 KB in all
    _, _, raw = exchange(server.port, head("GET", "/api/health", headers))
    assert_rejected(raw, 431, "headers_too_large")


def test_one_header_line_over_the_line_limit_is_431(server: MlserveProcess) -> None:
    _, _, raw = exchange(server.port, head("GET", "/api/health", [("X-Long", "c" * 9000)]))
    assert_rejected(raw, 431, "headers_too_large")


def test_too_many_headers_are_431(server: MlserveProcess) -> None:
    headers = [(f"X-N{i}", "1") for i in range(150)]
    for method, path, body in (("GET", "/api/health", b""), ("POST", "/api/predict", PREDICT_BODY)):
        _, _, raw = exchange(server.port, head(method, path, headers, body))
        assert_rejected(raw, 431, "headers_too_large")


def test_a_20_kb_url_is_414(server: MlserveProcess) -> None:
    _, _, raw = exchange(server.port, head("GET", "/api/health?q=" + "d" * 20_000, []))
    assert_rejected(raw, 414, "uri_too_long")


def test_a_request_just_under_every_limit_is_served(server: MlserveProcess) -> None:
    # An 8 KB URL, one 8 KB header field, 90 fields, about 60 KB of head in all.
    url = "/api/health?q=" + "e" * 8000
    headers = [("X-Long", "f" * 8100)] + [(f"X-F{i}", "g" * 480) for i in range(86)]
    request = head("GET", url, headers)
    assert 55_000 < len(request) < 65_536
    status, _, raw = exchange(server.port, request, close_expected=False)
    assert status == 200, raw[:300]
    predict = head("POST", "/api/predict", headers, PREDICT_BODY)
    status, answer, raw = exchange(server.port, predict, close_expected=False)
    assert status == 200, raw[:300]
    assert answer["model"] == "sentiment"


def test_a_pipelined_oversized_head_is_answered_after_the_requests_before_it(
    server: MlserveProcess,
) -> None:
    # A keep-alive request, then an oversized one on the same connection: 200, then 431, closed.
    first = head("GET", "/api/health", [])
    second = head("GET", "/api/health", [("X-Big", "h" * 100_000)])
    status, _, raw = exchange(server.port, first + second)
    assert status == 200
    assert b"HTTP/1.1 431 " in raw
    assert raw.endswith(b"<closed>")


def test_concurrent_huge_headers_hold_no_memory(server: MlserveProcess) -> None:
    process = psutil.Process(server.pid)
    exchange(server.port, head("GET", "/api/health", []), close_expected=False)  # warm
    before = process.memory_info().rss
    results: list[tuple[bytes, int, float]] = []
    lock = threading.Lock()

    def attack(index: int) -> None:
        prefix = f"POST /api/predict HTTP/1.1\r\nHost: x\r\nX-Big{index}: ".encode()
        outcome = flood(server.port, prefix, 50 * 1024 * 1024, budget_s=20)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    after = process.memory_info().rss
    assert len(results) == 8
    for answer, sent, elapsed in results:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert elapsed < 2.0
        assert sent < 16 * 1024 * 1024  # stopped at the answer, far from the 50 MB
    assert after - before < 8 * 1024 * 1024, f"RSS grew {(after - before) / 2**20:.1f} MB"
    # Still serving.
    status, _, _ = exchange(server.port, head("GET", "/api/health", []), close_expected=False)
    assert status == 200


def test_limit_concurrency_defaults_to_a_cap_passed_to_uvicorn(tmp_path: Path) -> None:
    settings = load_settings(None, home=str(tmp_path))
    assert settings.server.limit_concurrency == 2048
    options = uvicorn_options(settings)
    assert options["limit_concurrency"] == 2048
    assert options["loop"] == "asyncio"  # fair to many connections (docs/benchmarks.md)
    assert options["header_limits"].max_total_bytes == 65_536
    unlimited = load_settings(None, home=str(tmp_path), server={"limit_concurrency": 0})
    assert uvicorn_options(unlimited)["limit_concurrency"] is None


HEALTH = head("GET", "/api/health", [])
PREDICT = head("POST", "/api/predict", [], PREDICT_BODY)


def ask(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    return read_answer(sock, time.monotonic() + 10, until_closed=False)


def admitted(port: int, count: int) -> list[socket.socket]:
    """`count` kept-alive connections the server has admitted under its cap (each has been
    answered 200); one refused because a connection of an earlier exchange (the readiness
    check's, say) was still counted is opened again."""
    held: list[socket.socket] = []

    def one_more() -> bool:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            ok = ask(sock, HEALTH).startswith(b"HTTP/1.1 200 ")
        except OSError:
            ok = False
        if ok:
            held.append(sock)
        else:
            sock.close()
        return ok

    try:
        for _ in range(count):
            wait_for(one_more, "a connection admitted under the cap")
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def test_past_the_connection_cap_requests_get_a_json_503(tmp_path: Path) -> None:
    populate(tmp_path / "registry")
    config = {"server": {"limit_concurrency": 3}}
    with running(tmp_path / "registry", tmp_path / "home", config=config) as capped:
        idle = admitted(capped.port, 3)
        try:  # three open: the fourth is refused
            status, answer, raw = exchange(capped.port, HEALTH)
        finally:
            for sock in idle:
                sock.close()
        assert status == 503, raw[:300]
        assert answer["error"]["code"] == "unavailable"
        assert b"retry-after: 1" in raw.lower()
        assert raw.endswith(b"<closed>")
        # Under the cap again: served (the closed idle connections are noticed asynchronously).
        wait_for(
            lambda: exchange(capped.port, HEALTH, close_expected=False)[0] == 200,
            "a request served under the cap",
        )


def test_past_the_connection_cap_a_post_and_what_follows_it_are_dropped_cleanly(
    tmp_path: Path,
) -> None:
    """A refused request's body arrives in the same read as its head, often with a pipelined
    request behind it: nothing of it is parsed. It used to go on into the body with no
    request cycle: an AttributeError per refusal, a write after the half-close, and a logged
    traceback (a third of the server's time in an open-loop overload)."""
    populate(tmp_path / "registry")
    config = {"server": {"limit_concurrency": 1}}
    with running(tmp_path / "registry", tmp_path / "home", config=config) as capped:
        (idle,) = admitted(capped.port, 1)
        try:
            for _ in range(3):
                status, answer, raw = exchange(capped.port, PREDICT + PREDICT)
                assert status == 503, raw[:300]
                assert answer["error"]["code"] == "unavailable"
                assert raw.count(b"HTTP/1.1 ") == 1, "one answer, then the connection closes"
                assert raw.endswith(b"<closed>")
        finally:
            idle.close()
        wait_for(
            lambda: exchange(capped.port, PREDICT, close_expected=False)[0] == 200,
            "a prediction served under the cap",
        )
    log = capped.log.read_text()
    assert "Traceback" not in log and "Fatal error" not in log, log[-3000:]
    assert "Invalid HTTP request" not in log


def test_the_cap_refuses_new_connections_not_the_kept_alive_ones_under_it(tmp_path: Path) -> None:
    """server.limit_concurrency counts connections as they open: one opened past the cap is
    refused; the ones under it go on being served while it lasts (uvicorn decided per request,
    so a flood of new connections got every kept-alive client refused and closed in turn)."""
    populate(tmp_path / "registry")
    config = {"server": {"limit_concurrency": 2}}
    with running(tmp_path / "registry", tmp_path / "home", config=config) as capped:
        kept, second = admitted(capped.port, 2)
        with kept, second:
            with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as past:
                # Three open now: the one opened last is refused, the other two are not.
                assert ask(past, PREDICT).startswith(b"HTTP/1.1 503 ")
                for _ in range(3):
                    assert ask(kept, PREDICT).startswith(b"HTTP/1.1 200 ")
                    assert ask(second, PREDICT).startswith(b"HTTP/1.1 200 ")
            # The refusal is counted: mlserve_connections_refused_total.
            metrics = ask(kept, head("GET", "/metrics", []))
            refused = re.search(rb"\nmlserve_connections_refused_total ([0-9.]+)", metrics)
            assert refused and float(refused.group(1)) >= 1.0, metrics[-2000:]


def test_the_listening_socket_gives_connections_tcp_nodelay(tmp_path: Path) -> None:
    """asyncio sets TCP_NODELAY only on sockets that say they are TCP: without it an answer
    written in two parts (head, body) waits on Nagle and the client's delayed ACK (~40 ms)."""
    settings = load_settings(None, home=str(tmp_path), server={"port": 0})
    listening = bind_socket(settings)
    listening.listen()

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Probe, sock=listening)
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    try:
        assert asyncio.run(accepted_nodelay()) != 0
    finally:
        listening.close()


def test_uvloop_without_the_package_is_a_config_error(tmp_path: Path, monkeypatch: Any) -> None:
    settings = load_settings(None, home=str(tmp_path), server={"loop": "uvloop"})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="uvloop package"):
        run(settings)
