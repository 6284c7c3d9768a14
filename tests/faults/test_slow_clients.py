"""Slow and abandoned connections against a real server: requests trickled a byte at a time
(slowloris), headers or bodies left half-sent, while a normal client keeps getting fast
answers; idle keep-alive connections are closed after server.timeout_keep_alive.

uvicorn has no header- or body-read timeout: a connection that never finishes its request
stays open (an open file descriptor and a few KB, never the event loop). What bounds that in
production is the reverse proxy's client_header_timeout / client_body_timeout (README,
"Reliability"); what holds here is that every other client is still served."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from support.data import populate
from support.servers import MlserveProcess, running

pytestmark = pytest.mark.slow

TRICKLERS = 60  # requests sent a byte every ~20 ms
HALF_HEADERS = 60  # request line and some headers, then silence
HALF_BODIES = 60  # headers promising 1000 bytes, 10 sent, then silence
KEEP_ALIVE_S = 1
PREDICT = b'{"features": [5.1, 3.5, 1.4, 0.2], "model": "iris"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    root = tmp_path_factory.mktemp("slow-clients")
    populate(root / "registry")
    config = {"server": {"timeout_keep_alive": KEEP_ALIVE_S}}
    with running(root / "registry", root / "home", config=config) as proc:
        yield proc


def connect(server: MlserveProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_bytes(body: bytes = PREDICT) -> bytes:
    head = (
        "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers, then Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slow_and_abandoned_connections_do_not_starve_other_clients(server: MlserveProcess) -> None:
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(HALF_HEADERS):
            sock = connect(server)
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets.append(sock)
        for _ in range(HALF_BODIES):
            sock = connect(server)
            head = request_bytes(b"x" * 1000)[:-1000]
            sock.sendall(head + b'{"features"')
            sockets.append(sock)
        tricklers = [connect(server) for _ in range(TRICKLERS)]
        sockets.extend(tricklers)
        payload = request_bytes()
        sent = [0]

        def trickle() -> None:
            while not stop.is_set() and sent[0] < len(payload):
                for sock in tricklers:
                    with contextlib.suppress(OSError):
                        sock.send(payload[sent[0] : sent[0] + 1])
                sent[0] += 1
                stop.wait(0.02)  # a slow client's pace

        trickler = threading.Thread(target=trickle)
        trickler.start()

        latencies = []
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(150):
                started = time.perf_counter()
                if i % 3 == 0:
                    response = http.get("/api/health")
                else:
                    response = http.post(
                        "/api/predict",
                        content=PREDICT,
                        headers={"content-type": "application/json"},
                    )
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            assert sent[0] < len(payload), "the trickled requests finished before the check"
            assert statistics.median(latencies) < 0.1, latencies
            assert max(latencies) < 2.0, max(latencies)  # starved would be the 10 s timeout
            detailed = http.get("/api/health/detailed").json()
            # The half-sent bodies are requests the app is waiting on; nothing else is stuck.
            assert detailed["process"]["open_requests"] <= HALF_BODIES + TRICKLERS + 1
    finally:
        stop.set()
        for sock in sockets:
            sock.close()

    # Abandoned requests release their slot once their connection goes away.
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=server.url, timeout=10) as http:
        while True:
            open_requests = http.get("/api/health/detailed").json()["process"]["open_requests"]
            if open_requests == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling interval of a bounded wait
    assert open_requests == 1


def test_a_trickled_request_is_answered_once_complete(server: MlserveProcess) -> None:
    with connect(server) as sock:
        for byte in request_bytes():
            sock.send(bytes([byte]))
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"model":"iris"' in answer


def test_idle_keep_alive_connections_are_closed_after_the_timeout(server: MlserveProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes())
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(KEEP_ALIVE_S + 5)
        assert sock.recv(1) == b""  # the server closed the idle connection
        idle = time.monotonic() - started
    assert KEEP_ALIVE_S * 0.5 <= idle < KEEP_ALIVE_S + 3, idle
