"""server.events_per_turn: how many ready sockets the event loop takes per turn.

asyncio asks epoll for every ready socket at once, so with 2,000 busy connections one turn reads
and parses up to 2,000 requests before the work already under way (a task whose prediction came
back, an answer to write) runs again. Under overload that made every admitted request wait
several such turns (seconds) and kept thousands of requests in memory at once. Taking at most
`events_per_turn` sockets per turn lets the work in flight finish between them; the other
requests wait, unread, in the kernel's buffers, which costs the process nothing. epoll hands
out ready sockets in turn (a socket reported goes to the back of its ready list), so none
waits for good (docs/benchmarks.md, "Sixth pass").

New connections are capped the same way: asyncio accepts up to the listen backlog
(server.backlog) per turn, a task, a transport and a protocol each, so a flood of new
connections (clients past server.limit_concurrency, each refused and back at once) took whole
turns from the connections being served. At most `events_per_turn` are accepted per turn; the
rest wait in the kernel's accept queue. The listening sockets are asked every turn, outside
the cap: behind 2,000 busy connections they came up a few times a second, and new clients
waited seconds in the accept queue.

Only asyncio's epoll loop (Linux) is capped; uvloop and other selectors are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import selectors
import socket
from typing import Any

__all__ = ["GATE_STATE_KEY", "ConnectionGate", "cap_ready_events"]

log = logging.getLogger(__name__)


class _CappedEpoll:
    """A select.epoll whose poll() returns at most `cap` events, plus the listening sockets
    that are ready: those are asked every turn, on an epoll of their own, rather than waiting
    their turn behind every busy connection (which let a flood of new connections queue in
    the kernel for seconds)."""

    __slots__ = ("epoll", "cap", "listeners", "listening")

    def __init__(self, epoll: Any, cap: int) -> None:
        self.epoll = epoll
        self.cap = cap
        self.listeners: set[int] = set()
        self.listening: Any = None  # a select.epoll of the listening sockets, once there are

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        cap = self.cap
        result: list[tuple[int, int]] = self.epoll.poll(
            timeout, cap if maxevents <= 0 or maxevents > cap else maxevents
        )
        if self.listeners:
            for fd, mask in self.listening.poll(0):
                if all(fd != seen for seen, _ in result):
                    result.append((fd, mask))
        return result

    def listen_on(self, fd: int) -> None:
        if self.listening is None:
            self.listening = select.epoll()
        if fd not in self.listeners:
            self.listening.register(fd, select.EPOLLIN)
            self.listeners.add(fd)

    def unregister(self, fd: int) -> None:
        self.epoll.unregister(fd)
        if fd in self.listeners:
            self.listeners.discard(fd)
            with contextlib.suppress(OSError):  # already closed: gone from the epoll too
                self.listening.unregister(fd)

    def close(self) -> None:
        if self.listening is not None:
            self.listening.close()
        self.epoll.close()

    def __getattr__(self, name: str) -> Any:  # register, modify, fileno, closed
        return getattr(self.epoll, name)


GATE_STATE_KEY = "mlserve.gate"


class ConnectionGate:
    """server.limit_concurrency at the door: while the process holds `cap` connections or
    more, a new one is refused as it is accepted, without a transport, a protocol or a parse:
    what it has sent is read and dropped, the pre-rendered 503 written and the socket closed
    (four system calls; through asyncio and the HTTP protocol a refusal cost as much as a
    prediction, and a flood of clients past the cap took the server from the ones under it).
    When the request has not all arrived, the socket is half-closed and what follows read and
    dropped until the client closes (at most LINGER_S), so that the client reads the 503
    rather than a reset. The protocol hands over uvicorn's set of open connections when the
    first one is made (lifespan state, GATE_STATE_KEY)."""

    __slots__ = ("cap", "answer", "connections", "refused", "counter")

    def __init__(self, cap: int | None, answer: bytes, counter: Any = None) -> None:
        self.cap = cap
        self.answer = answer
        self.connections: Any = None  # uvicorn's server_state.connections
        self.refused = 0
        self.counter = counter  # a Prometheus counter (mlserve_connections_refused_total)

    def count_refusal(self) -> None:
        self.refused += 1
        if self.counter is not None:
            self.counter.inc()

    def over(self) -> bool:
        connections = self.connections
        return self.cap is not None and connections is not None and len(connections) >= self.cap

    def refuse(self, conn: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        got = b""
        try:
            conn.setblocking(False)
            for _ in range(4):  # the request, as far as it has come (bounded)
                data = conn.recv(65_536)
                if not data:  # the client is gone: nothing to answer
                    conn.close()
                    return
                got += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # reset by the client: nothing to answer
            conn.close()
            return
        self.count_refusal()
        try:
            conn.send(self.answer)
            if got and _whole_request(got):
                conn.close()
                return
            # The request is not all here yet: closing now would answer what follows with a
            # reset, and the client's stack may drop the 503 with it. Half-close, and read
            # and drop until the client closes (or for LINGER_S), as nginx's lingering close.
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # gone meanwhile
            conn.close()
            return
        _linger(conn, loop)


LINGER_S = 1.0


def _whole_request(data: bytes) -> bool:
    """Has `data` a whole request head and its Content-Length body (not chunked)?"""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end].lower()
    if b"transfer-encoding:" in head:
        return False
    at = head.find(b"\ncontent-length:")
    if at < 0:
        return True
    value = head[at + 16 :].split(b"\r", 1)[0].strip()
    return value.isdigit() and len(data) >= end + 4 + int(value)


def _linger(conn: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
    fd = conn.fileno()

    def drop() -> None:
        timer.cancel()
        loop.remove_reader(fd)
        conn.close()

    def readable() -> None:
        try:
            if conn.recv(65_536):
                return  # dropped; the timer bounds how long
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        drop()  # the client closed (or reset)

    loop.add_reader(fd, readable)
    timer = loop.call_later(LINGER_S, drop)


class _CappedServing:
    """The loop's _start_serving: the listening socket is asked every turn (_CappedEpoll),
    at most `cap` connections are accepted per turn (asyncio passes the listen backlog), and
    past the connection cap they are refused at the door (ConnectionGate)."""

    __slots__ = ("loop", "epoll", "gate")

    def __init__(self, loop: Any, epoll: _CappedEpoll) -> None:
        self.loop = loop
        self.epoll = epoll
        self.gate: ConnectionGate | None = None

    def __call__(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
    ) -> None:
        self.epoll.listen_on(sock.fileno())
        self.loop._add_reader(
            sock.fileno(), self.accept, protocol_factory, sock, sslcontext, server, backlog, *args
        )

    def accept(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any,
        server: Any,
        backlog: int,
        *args: Any,
    ) -> None:
        count = min(backlog, self.epoll.cap)
        gate = self.gate
        if gate is None or sslcontext is not None or not gate.over():
            # asyncio's accept (its EMFILE pause restarts serving through self, the reader)
            self.loop._accept_connection(protocol_factory, sock, sslcontext, server, count, *args)
            return
        for _ in range(count):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:  # out of descriptors and the like: asyncio's way (it pauses)
                self.loop._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args)
                return
            gate.refuse(conn, self.loop)


def cap_ready_events(
    loop: asyncio.AbstractEventLoop, cap: int, gate: ConnectionGate | None = None
) -> bool:
    """Make `loop` take at most `cap` ready sockets, and accept at most `cap` new connections,
    per turn (0: no cap), and refuse new connections at `gate` while it is over its cap. Call
    it before the server starts listening (the lifespan's startup, which uvicorn runs first).
    True when capped: an asyncio selector loop over epoll; any other loop is left alone."""
    selector = getattr(loop, "_selector", None)
    if cap <= 0 or not isinstance(selector, selectors.EpollSelector):
        return False
    inner = selector._selector  # type: ignore[attr-defined]  # the select.epoll object
    if isinstance(inner, _CappedEpoll):
        inner.cap = cap
    else:
        inner = selector._selector = _CappedEpoll(inner, cap)  # type: ignore[attr-defined]
    serving = loop._start_serving  # type: ignore[attr-defined]
    if not isinstance(serving, _CappedServing):
        # An instance attribute: a server looks it up when it starts listening.
        serving = loop._start_serving = _CappedServing(loop, inner)  # type: ignore[attr-defined]
    serving.gate = gate
    log.debug("event loop: at most %d ready sockets and new connections per turn", cap)
    return True
