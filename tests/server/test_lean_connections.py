"""What a connection holds between requests (issue 18 item 3: 2,000 connections should not
cost tens of MB; docs/benchmarks.md, "Fifth pass"), on the server's own protocol
(LimitedHttpToolsProtocol) serving a small ASGI app on a real loopback socket in this process,
so that its connections can be looked at: a finished exchange is let go, the instance keeps
few enough attributes for CPython's shared-key dicts, and the lazily made events still do
their job (keep-alive, pipelining, an answer before the body, a slow reader)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from support.wait import until
from uvicorn.server import ServerState

from mlserve.server.protocol import HeaderLimits, LimitedHttpToolsProtocol, ServerConfig
from mlserve.server.protocol import _LazyEvent as LazyEvent

BIG = 4 * 2**20  # an answer far past the transport's write buffer: writing has to pause
# CPython keeps an instance's attribute values in a table shared by the class's instances while
# the class has at most 30 attribute names; past that every instance has a dict of its own.
SHARED_KEYS_MAX = 30


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/echo answers the body; /early answers before reading it; /big answers BIG bytes."""
    assert scope["type"] == "http"
    path = scope["path"]
    body = b""
    if path == "/echo":
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
    elif path == "/big":
        body = b"x" * BIG
    else:
        body = path.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[int, ServerState]]:
    config = ServerConfig(app, header_limits=HeaderLimits(), lifespan="off", log_level="error")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: LimitedHttpToolsProtocol(config, state, {}), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], state
    finally:
        server.close()
        for protocol in list(state.connections):
            protocol.transport.close()
        await server.wait_closed()


@asynccontextmanager
async def connected(
    port: int, **kwargs: Any
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
    return int(lines[0].split()[1]), await asyncio.wait_for(reader.readexactly(length), 30)


def the_connection(state: ServerState) -> LimitedHttpToolsProtocol:
    (protocol,) = state.connections
    assert isinstance(protocol, LimitedHttpToolsProtocol)
    return protocol


async def settled() -> None:
    for _ in range(5):  # the answer's last callbacks (on_response_complete) run
        await asyncio.sleep(0)


def test_a_kept_alive_connection_holds_no_finished_request() -> None:
    async def scenario() -> None:
        async with serving() as (port, state):
            async with connected(port) as (reader, writer):
                for method, path, body in [
                    ("GET", "/one", b""),
                    ("POST", "/echo", b'{"text": "good"}'),
                    ("GET", "/three", b""),
                ]:
                    writer.write(request(method, path, body))
                    status, got = await answer(reader)
                    assert (status, got) == (200, body or path.encode())
                    await settled()
                    protocol = the_connection(state)
                    # Between requests the connection keeps nothing of the last one.
                    kept: list[object] = [protocol.cycle, protocol.scope, protocol.headers]
                    assert kept == [None, None, None]
                    assert len(vars(protocol)) <= SHARED_KEYS_MAX, sorted(vars(protocol))
                    assert not protocol.pipeline

    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving() as (port, state):
            async with connected(port) as (reader, writer):
                writer.write(
                    request("POST", "/echo", b"first")
                    + request("GET", "/second")
                    + request("POST", "/echo", b"third")
                )
                assert [await answer(reader) for _ in range(3)] == [
                    (200, b"first"),
                    (200, b"/second"),
                    (200, b"third"),
                ]
                await settled()
                assert the_connection(state).cycle is None

    asyncio.run(scenario())


def test_an_answer_before_the_body_then_the_next_request() -> None:
    async def scenario() -> None:
        async with serving() as (port, state):
            async with connected(port) as (reader, writer):
                head = b"POST /early HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n"
                writer.write(head + b"12345")
                assert await answer(reader) == (200, b"/early")
                await settled()
                # The request is not over (half its body is still to come): it is kept.
                assert the_connection(state).cycle is not None
                writer.write(b"67890" + request("GET", "/next"))
                assert await answer(reader) == (200, b"/next")
                await settled()
                assert the_connection(state).cycle is None

    asyncio.run(scenario())


def test_an_answer_to_a_slow_reader_waits_for_the_socket_and_arrives_whole() -> None:
    async def scenario() -> None:
        async with serving() as (port, state):
            async with connected(port, limit=2**16) as (reader, writer):
                writer.write(request("GET", "/big"))
                # Nothing read yet: the server's writes pause.
                await until(lambda: the_connection(state).flow.write_paused, "paused writes")
                status, got = await answer(reader)
                assert status == 200 and len(got) == BIG and set(got) == {ord("x")}
                writer.write(request("GET", "/after"))
                assert await answer(reader) == (200, b"/after")

    asyncio.run(scenario())


def test_the_lazy_event_waits_wakes_and_clears_like_asyncio_event() -> None:
    async def scenario() -> None:
        event = LazyEvent()
        assert not event.is_set() and not event._waiters  # no deque until a wait blocks
        event.set()
        assert await asyncio.wait_for(event.wait(), 1) is True  # set: no wait
        assert not event._waiters
        event.clear()
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done() and isinstance(event._waiters, collections.deque)
        event.set()
        assert await asyncio.wait_for(waiter, 1) is True
        event.clear()
        with_timeout = asyncio.ensure_future(asyncio.wait_for(event.wait(), 0.05))
        await asyncio.sleep(0.1)
        assert isinstance(with_timeout.exception(), TimeoutError)

    asyncio.run(scenario())


def test_the_keep_alive_timeout_spares_a_request_that_has_arrived_unread() -> None:
    """With server.events_per_turn a ready socket can wait its turn; if the keep-alive timer
    fires meanwhile, the request that has arrived is answered, not reset."""

    async def scenario() -> bytes:
        async with serving() as (port, state), connected(port) as (reader, writer):
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"/first")
            (protocol,) = state.connections
            writer.write(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")  # in the kernel now
            protocol.timeout_keep_alive_handler()  # before the loop has read it
            assert not protocol.transport.is_closing()
            answer = await asyncio.wait_for(reader.readuntil(b"/second"), 10)
            # Idle with nothing waiting: the timer closes it, as before.
            protocol.timeout_keep_alive_handler()
            assert protocol.transport.is_closing()
            return answer

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_stopping_server_answers_a_request_that_has_arrived_unread_then_closes() -> None:
    """On SIGTERM (or a worker replaced on SIGHUP) uvicorn closes the connections between
    requests; a request that has arrived but waits its turn is answered first, then the
    connection closes. A connection with nothing waiting is closed at once, as before."""

    async def scenario() -> tuple[bytes, bool]:
        async with serving() as (port, state), connected(port) as (reader, writer):
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"/first")
            (protocol,) = state.connections
            writer.write(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")  # in the kernel now
            protocol.shutdown()  # before the loop has read it
            assert not protocol.transport.is_closing()
            rest = await asyncio.wait_for(reader.read(), 10)  # up to the server's close
            # Between requests with nothing waiting: closed at once, as before.
            async with connected(port) as (idle_reader, idle_writer):
                idle_writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
                await idle_reader.readuntil(b"/one")
                (idle,) = state.connections
                idle.shutdown()
                idle_closed = idle.transport.is_closing()
            return rest, idle_closed

    rest, idle_closed = asyncio.run(scenario())
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"/second")
    assert b"\r\nconnection: close\r\n" in rest.lower()
    assert idle_closed


def test_a_stopping_server_waits_a_moment_for_a_new_connections_first_request() -> None:
    """A connection accepted just before the stop, its request still on its way, is answered
    when the request comes within FIRST_REQUEST_GRACE_S, and closed after it otherwise."""

    async def scenario() -> tuple[bytes, bool, bool]:
        async with serving() as (port, state):
            async with connected(port) as (reader, writer):
                await until(lambda: len(state.connections) == 1, "the new connection")
                (protocol,) = state.connections
                protocol.shutdown()  # nothing sent yet
                assert not protocol.transport.is_closing()
                writer.write(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
                answered = await asyncio.wait_for(reader.read(), 10)
            async with connected(port) as (silent_reader, _):
                await until(lambda: len(state.connections) == 1, "the silent connection")
                (silent,) = state.connections
                silent.shutdown()
                open_at_first = not silent.transport.is_closing()
                # Closed by the server once the grace is over: the client reads the end.
                ended = await asyncio.wait_for(silent_reader.read(), 10) == b""
            return answered, open_at_first, ended

    answered, open_at_first, ended = asyncio.run(scenario())
    assert answered.startswith(b"HTTP/1.1 200 ") and answered.endswith(b"/late")
    assert open_at_first and ended
