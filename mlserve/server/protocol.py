"""uvicorn's httptools protocol with a bounded request head and the JSON error shape at the caps.

httptools (llhttp) has no limit on the request line or headers and buffers an unfinished header
in Python bytes, so one request could hold any amount of memory (issue 18). This protocol counts
the head's bytes before the parser sees them and answers 431 (414 for the URL) at the limit,
holding no more than the limit per connection; the connection cap answers a JSON 503.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

import httptools
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlserve.server.errors import error_body
from mlserve.server.eventloop import GATE_STATE_KEY, ConnectionGate
from mlserve.server.shedding import RESERVED_KEY, SHED_STATE_KEY, Shedder

__all__ = [
    "OVER_THE_CAP",
    "HeaderLimits",
    "LimitedHttpToolsProtocol",
    "ServerConfig",
    "rejection",
]

log = logging.getLogger(__name__)

# After a 431/414 the connection is half-closed and what the client still sends is read and
# dropped for a moment, so the client reads the answer rather than a reset (nginx's lingering
# close); bounded in time and bytes, and nothing of it is kept.
LINGER_S = 1.0
LINGER_BYTES = 1 << 20
# A connection opened just before the server began to stop, whose first request has not come
# yet, gets this long for it (a client sends right after connecting) before it is closed.
FIRST_REQUEST_GRACE_S = 0.5


@dataclass(frozen=True, kw_only=True)
class HeaderLimits:
    """Bounds of one request head (request line and header fields), in bytes and fields."""

    max_line_bytes: int = 8192
    max_total_bytes: int = 65536
    max_count: int = 100


class ServerConfig(uvicorn.Config):
    """uvicorn's Config serving with LimitedHttpToolsProtocol; it carries the header limits to
    the protocol (and, pickled, to the processes of --workers)."""

    def __init__(self, app: Any, *, header_limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, **kwargs)
        self.header_limits = header_limits


class _HeadRejected(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def rejection(status: int, code: str, message: str, headers: Any = ()) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection, with the JSON error shape."""
    body = error_body(code, message, None)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


_UNAVAILABLE_BODY = error_body(
    "unavailable",
    "the server is at its connection limit (server.limit_concurrency); retry later",
    None,
)
_UNAVAILABLE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"connection", b"close"),  # a connection over the cap is not kept
]


_CAP_MESSAGE = "the server is at its connection limit (server.limit_concurrency); retry later"


def _over_the_cap() -> _HeadRejected:
    return _HeadRejected(503, "unavailable", _CAP_MESSAGE, extra=((b"retry-after", b"1"),))


# The same answer refused at the door (mlserve.server.eventloop.ConnectionGate), before any
# request is read: no Date (optional on a 5xx), no request id.
OVER_THE_CAP = rejection(503, "unavailable", _CAP_MESSAGE, ((b"retry-after", b"1"),))


async def over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The answer past server.limit_concurrency: uvicorn's 503, in the JSON error shape."""
    await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
    await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})


class _HeadWithBody:
    """A request cycle's transport that holds the response head until the body's first
    write, so that an answer leaves in one send() (one system call, one segment) rather than
    two. Not used when the client expects "100 Continue", which must not wait."""

    __slots__ = ("transport", "head", "state")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head = b""
        self.state = 0  # 0: nothing written yet; 1: the head is held; 2: passing through

    def write(self, data: bytes) -> None:
        state = self.state
        if state == 0:
            self.head, self.state = data, 1
            return
        if state == 1:
            data, self.head, self.state = self.head + data, b"", 2
        self.transport.write(data)

    def close(self) -> None:
        if self.state == 1:  # a head without a body (the app failed): it goes first
            self.transport.write(self.head)
            self.head, self.state = b"", 2
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class _Pipeline(list):  # type: ignore[type-arg]
    """The pipelined requests waiting for earlier answers: what uvicorn uses of a deque
    (appendleft, pop, truth), as a list. An empty deque holds a 64-slot block (~0.7 KB, a
    separate allocation) on every connection; an empty list holds nothing."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _LazyEvent(asyncio.Event):
    """asyncio.Event whose deque of waiters (a ~0.7 KB allocation) is made by the first wait
    that has to block. uvicorn makes one per connection (FlowControl) and one per request
    (the cycle's message_event) that almost never blocks: the body has usually arrived before
    the request's task first waits for it."""

    _waiters: Any = ()  # until a wait blocks: nothing to wake

    def __init__(self) -> None:  # no super(): no deque yet
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        if not self._waiters:
            self._waiters = collections.deque()
        return await super().wait()


class _LazyFlowControl(FlowControl):
    """uvicorn's FlowControl with a _LazyEvent."""

    def __init__(self, transport: asyncio.Transport) -> None:  # no super(): no deque
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._is_writable_event = _LazyEvent()
        self._is_writable_event.set()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that bounds each request head.

    While a head (or, in a chunked body, a chunk's framing and the trailers) is being read, at
    most the bytes left under max_total_bytes are fed to the parser; the URL is bounded as it
    arrives (on_url), each header line and the field count as each field completes.

    Lean per connection (issue 18: 2,000 connections should not cost tens of MB): this class's
    own state is in slots, so that the instance dict keeps uvicorn's attributes only (under
    CPython's 30 shared keys: a dict of ~45 keys is a separate ~1.5 KB table on every
    connection); the pipeline is a list and the events make their deques when needed; and
    a finished exchange's request (scope, headers, cycle) is let go rather than kept until the
    connection's next request."""

    __slots__ = (
        "limits",
        "counting",
        "head_bytes",
        "url_bytes",
        "header_count",
        "rejected",
        "pending",
        "discarded",
        "linger",
        "connection_cap",
        "over_cap",
        "served_app",
        "shedding",
        "shed_keep_alive",
        "started",
        "stopping",
    )

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self.limits: HeaderLimits = getattr(config, "header_limits", None) or HeaderLimits()
        self.counting = True  # bytes being fed belong to a head (or chunk framing/trailers)
        self.head_bytes = 0
        self.url_bytes = 0
        self.header_count = 0
        self.rejected = False
        self.pending: _HeadRejected | None = None  # a rejection waiting for earlier answers
        self.discarded = 0
        self.linger: asyncio.TimerHandle | None = None
        # uvicorn's own check would answer its text/plain 503; ours answers the JSON shape.
        self.connection_cap = self.limit_concurrency
        self.limit_concurrency = None
        self.over_cap = False  # opened past the cap: its requests are refused while it lasts
        self.served_app = self.app
        # A prediction refused at overload (mlserve.server.shedding): its body is read and
        # dropped; then the connection is kept (or closed when the request asked to).
        self.shedding = False
        self.shed_keep_alive = False
        self.started = 0.0  # perf_counter at the current request's first byte
        self.stopping = False  # the server is stopping: answer the request waiting, then close

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _LazyFlowControl(transport)
        gate: ConnectionGate | None = self.app_state.get(GATE_STATE_KEY)
        if gate is not None and gate.connections is None:
            gate.connections = self.connections  # the count it refuses new connections by
        cap = self.connection_cap
        # The cap is on connections, decided as each one opens (uvicorn decides per request,
        # so under a flood of new connections every open one, kept-alive clients included,
        # was refused and closed in turn, and nearly nothing was served).
        self.over_cap = cap is not None and len(self.connections) > cap

    # Feeding the parser

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            self.discarded += len(data)
            if self.discarded > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        try:
            if not self.counting or len(data) < self.limits.max_total_bytes - self.head_bytes:
                # The common case: all of it fits under the head limit (or is body).
                if self.counting:
                    self.head_bytes += len(data)
                self.parser.feed_data(data)
                return
            view = memoryview(data)
            while view and not self.transport.is_closing():
                if self.counting:
                    room = self.limits.max_total_bytes - self.head_bytes
                    piece, view = view[:room], view[room:]
                    self.head_bytes += len(piece)
                else:
                    piece, view = view, view[:0]
                self.parser.feed_data(piece)
                if self.counting and self.head_bytes >= self.limits.max_total_bytes:
                    raise _HeadRejected(
                        431,
                        "headers_too_large",
                        f"the request headers are over {self.limits.max_total_bytes} bytes",
                    )
        except _HeadRejected as exc:
            self.reject(exc)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadRejected):  # raised in a parser callback
                self.reject(exc.__context__)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def reject(self, exc: _HeadRejected) -> None:
        """Answer 431/414 and close, reading (and dropping) what follows for a moment."""
        self.rejected = True
        self.counting = False
        if exc.status == 503:  # under overload a line per refusal would cost more than it
            log.debug("%s %s from %s", exc.status, exc.message, self.client)
        else:
            log.warning("%s %s from %s", exc.status, exc.message, self.client)
        if not self.between_requests:
            # Pipelined: the answers before this one come first; nothing more is read.
            self.pending = exc
            self.transport.pause_reading()
            return
        self.answer(exc)

    def answer(self, exc: _HeadRejected) -> None:
        headers = [*self.server_state.default_headers, *exc.extra]
        self.transport.write(rejection(exc.status, exc.code, exc.message, headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.linger = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        if self.pending is None or self.pipeline:
            super().on_response_complete()
            cycle = self.cycle
            if cycle is None or (cycle.response_complete and not cycle.more_body):
                # Read and answered: nothing of it is needed until the next request, which
                # makes its own (an idle keep-alive connection would keep ~3 KB otherwise).
                self.cycle = self.scope = self.headers = None  # type: ignore[assignment]
            return
        self.server_state.total_requests += 1
        exc, self.pending = self.pending, None
        if not self.transport.is_closing():
            self.answer(exc)

    def timeout_keep_alive_handler(self) -> None:
        """Close an idle keep-alive connection, unless a request has arrived on it that the
        loop has not read yet: with server.events_per_turn a ready socket may wait its turn
        for a moment, and closing it with the request unread answered it with a reset."""
        if self.transport.is_closing():
            return
        if self.request_waiting():
            return  # read in its turn (a close by the client too), as usual
        self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping (SIGTERM, a worker replaced on SIGHUP): uvicorn closes every
        connection between requests at once. One whose next request has arrived but waits
        unread is answered first, then closed: closing it had answered that request with a
        dropped connection. A connection with no request yet gets FIRST_REQUEST_GRACE_S for
        its first (accepted just before the stop, its request may be on its way)."""
        if self.between_requests and not self.transport.is_closing():
            if self.request_waiting():
                self.stopping = True
                return
            if not self.started:  # no request yet: it may be on its way
                self.stopping = True
                self.loop.call_later(FIRST_REQUEST_GRACE_S, self.close_if_idle)
                return
        super().shutdown()

    @property
    def between_requests(self) -> bool:
        """No answer is under way: no request yet, or the last one answered in full."""
        return self.cycle is None or self.cycle.response_complete

    def close_if_idle(self) -> None:
        """Close the connection unless a request is being answered or has arrived."""
        if self.between_requests and not self.transport.is_closing() and not self.request_waiting():
            self.transport.close()

    def request_waiting(self) -> bool:
        """Has the client sent something the loop has not read yet?"""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        waiting = select.poll()  # not select.select: descriptors past 1,024
        waiting.register(sock.fileno(), select.POLLIN)
        return bool(waiting.poll(0))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        super().connection_lost(exc)

    # Parser callbacks

    def on_message_begin(self) -> None:
        self.started = time.perf_counter()  # a refusal's time (shed_now) counts from here
        self.url_bytes = 0
        self.header_count = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self.url_bytes += len(url)
        if self.url_bytes > self.limits.max_line_bytes:
            raise _HeadRejected(
                414, "uri_too_long", f"the request URL is over {self.limits.max_line_bytes} bytes"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_count:
            raise _HeadRejected(
                431,
                "headers_too_large",
                f"the request has more than {self.limits.max_count} header fields",
            )
        if len(name) + len(value) > self.limits.max_line_bytes:
            raise _HeadRejected(
                431,
                "headers_too_large",
                f"a request header field is over {self.limits.max_line_bytes} bytes",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.counting = False
        if self.shed_now():
            return
        cap = self.connection_cap
        if self.over_cap:  # still past the cap, counting this connection?
            self.over_cap = cap is not None and len(self.connections) > cap
        over = self.over_cap or (cap is not None and len(self.tasks) >= cap)
        if over:
            if RESERVED_KEY in self.scope:  # let in by shed_now, but never reaches the app
                self.app_state[SHED_STATE_KEY].release(self.scope)
            gate: ConnectionGate | None = self.app_state.get(GATE_STATE_KEY)
            if gate is not None:
                gate.count_refusal()
            if not self.pipeline and self.between_requests:
                # Answered from bytes, then closed: no ASGI task for a refusal. Raised, so
                # that the parser stops here: the body (often in the same read) and what
                # follows are dropped, not given to a request that has no cycle; data_received
                # answers it through reject(), as it does a 431.
                raise _over_the_cap()
        self.app = over_capacity if over else self.served_app
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            if self.stopping:
                cycle.keep_alive = False  # answered with "connection: close", then closed
            cycle.message_event = _LazyEvent()  # nothing has waited on, nor set, uvicorn's yet
            if not self.expect_100_continue:
                cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def shed_now(self) -> bool:
        """Answer a prediction 503 from pre-rendered bytes when every queue it could reach is
        full: no ASGI task, no body parsed. Only when no earlier answer is pending (a pipelined
        request goes the usual way, where the request middleware sheds it)."""
        shedder: Shedder | None = self.app_state.get(SHED_STATE_KEY)
        if (
            shedder is None
            or self.pipeline
            or not self.between_requests
            or self.parser.get_method() != b"POST"
        ):
            return False
        keep_alive = (
            self.parser.get_http_version() != "1.0"
            and self.parser.should_keep_alive()
            # An "Expect: 100-continue" client may never send the body: closed instead.
            and not self.expect_100_continue
        )
        answer = shedder.refusal(
            httptools.parse_url(self.url).path,
            self.headers,
            keep_alive=keep_alive,
            default_headers=self.server_state.default_headers,
            started=self.started,
            scope=self.scope,  # type: ignore[arg-type]  # a TypedDict, written to as a dict
        )
        if answer is None:
            return False
        self.transport.write(answer)
        self.shedding = True
        self.shed_keep_alive = keep_alive
        return True

    def on_chunk_header(self) -> None:
        # A chunk's size line, or the last chunk's trailers, which the parser buffers like
        # headers: counted until the chunk's data arrives.
        self.counting = True
        self.head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self.counting = False
        if self.shedding:
            return  # a refused request's body: dropped
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.counting = True
        self.head_bytes = 0
        if self.shedding:
            self.shedding = False
            if self.shed_keep_alive:
                self.on_response_complete()  # keep-alive timer, resume, next pipelined
            else:
                self.transport.close()
            return
        super().on_message_complete()
