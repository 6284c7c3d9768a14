"""The two HTTP engines: a raw keep-alive HTTP/1.1 client (httptools) and aiohttp (an extra)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from urllib.parse import urlsplit

from mlserve.errors import UsageError
from mlserve.loadtest.plan import LoadPlan, Target
from mlserve.loadtest.recorder import (
    HttpEngine,
    InvalidResponseError,
    Recorder,
    ServerDisconnectedError,
)

__all__ = ["AIOHTTP_EXTRA", "AiohttpClient", "RawClient", "make_client", "require_engine"]

# aiohttp and its helpers (yarl, multidict, frozenlist, ...: 13 MiB) are not dependencies: the
# raw engine is the default and the faster one; aiohttp is the reference it was measured against.
AIOHTTP_EXTRA = "pip install 'mlserve-sklearn[aiohttp]'"


def require_engine(name: str) -> None:
    """UsageError naming the extra to install when the engine's HTTP library is missing."""
    if name != "aiohttp":
        return  # raw: httptools is a dependency
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise UsageError(
            f"--engine aiohttp needs aiohttp, which is not installed: {AIOHTTP_EXTRA}"
        ) from None


def _ssl_context(insecure: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools parses, a future waits for each answer."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.keep_alive = True
        self.deadline = 0.0
        self.ptime: bytes | None = None
        self.nbytes = 0
        self.status = 0
        self.keep_body = False
        self.body = b""
        self.headers_done = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools.HttpParserError and friends
            self._fail(InvalidResponseError(f"cannot parse the response: {exc}"))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and self.parser.get_status_code() and exc is None:
                # A body delimited by the end of the connection.
                self.keep_alive = False
                self._complete()
            else:
                self.waiter.set_exception(
                    exc
                    if exc is not None
                    else ServerDisconnectedError("server closed the connection")
                )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"x-process-time":
            self.ptime = value

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_body = not 200 <= self.status < 300

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)
        if self.keep_body and len(self.body) < 2048:
            self.body += body

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def _fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
        self.waiter = waiter = loop.create_future()
        self.ptime = None
        self.nbytes = 0
        self.body = b""
        self.headers_done = False
        if self.transport is None:  # pragma: no cover - send() follows connection_made()
            raise ServerDisconnectedError("not connected")
        self.transport.write(data)
        return waiter


class RawClient:
    """Fast engine: HTTP/1.1 keep-alive on asyncio protocols, each request pre-encoded whole.

    About four times less CPU per request than aiohttp (bench/loadtest_accuracy.md), so the
    generator is not the bottleneck it measures.
    """

    def __init__(self, target: Target, *, timeout: float, insecure: bool = False) -> None:
        parts = urlsplit(target.url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.ssl: ssl.SSLContext | None = _ssl_context(insecure) if self.tls else None
        self.timeout = timeout
        default_port = (parts.scheme == "https" and self.port == 443) or (
            parts.scheme == "http" and self.port == 80
        )
        host_header = parts.hostname or ""
        if ":" in host_header:  # IPv6 literal
            host_header = f"[{host_header}]"
        if not default_port:
            host_header += f":{self.port}"
        target_path = parts.path or "/"
        if parts.query:
            target_path += "?" + parts.query
        head = f"{target.method} {target_path} HTTP/1.1\r\nHost: {host_header}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in target.headers)
        self.requests: list[bytes] = []
        for body in target.bodies:
            if body is None:
                self.requests.append((head + "\r\n").encode("latin-1", "replace"))
            else:
                extra = f"Content-Length: {len(body)}\r\n\r\n"
                self.requests.append((head + extra).encode("latin-1", "replace") + body)
        self.body_sizes = [len(b or b"") for b in target.bodies]
        self.idle: list[_RawConnection] = []
        self.active: set[_RawConnection] = set()
        self.loop = asyncio.get_running_loop()
        self._watchdog = self.loop.create_task(self._watch())

    async def _connect(self) -> _RawConnection:
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                _RawConnection,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            ),
            self.timeout,
        )
        return conn

    async def fire(self, index: int, started: float, rec: Recorder) -> None:
        idle = self.idle
        try:
            conn = None
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    break
                conn = None
            if conn is None:
                conn = await self._connect()
            conn.deadline = time.perf_counter() + self.timeout
            self.active.add(conn)
            try:
                status = await conn.send(self.requests[index], self.loop)
            finally:
                self.active.discard(conn)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            rec.failure(exc)
            return
        rec.bytes_out += self.body_sizes[index]
        rec.response(started, status, conn.ptime, conn.nbytes, conn.body)
        if conn.keep_alive and not conn.closed:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _watch(self) -> None:
        tick = min(0.1, self.timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            for conn in [c for c in self.active if c.deadline < now]:
                conn._fail(TimeoutError(f"no response within {self.timeout:g}s"))

    async def aclose(self) -> None:
        self._watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog
        for conn in [*self.idle, *self.active]:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


class AiohttpClient:
    """Reference engine on aiohttp's pooled ClientSession (slower; the aiohttp extra)."""

    def __init__(
        self, target: Target, *, timeout: float, connections: int, insecure: bool = False
    ) -> None:
        require_engine("aiohttp")
        import aiohttp
        from yarl import URL

        self._errors: tuple[type[BaseException], ...] = (
            aiohttp.ClientError,
            OSError,
            asyncio.TimeoutError,
        )
        connector = aiohttp.TCPConnector(
            limit=connections,
            limit_per_host=connections,
            ssl=_ssl_context(insecure) if target.scheme == "https" else False,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(target.headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        self.url = URL(target.url, encoded=False)
        self.method = target.method
        self.bodies = list(target.bodies)
        self.body_sizes = [len(b or b"") for b in target.bodies]

    async def fire(self, index: int, started: float, rec: Recorder) -> None:
        try:
            resp = await self.session.request(self.method, self.url, data=self.bodies[index])
            try:
                body = await resp.read()
            finally:
                resp.release()
        except self._errors as exc:
            rec.failure(exc)
            return
        rec.bytes_out += self.body_sizes[index]
        status = resp.status
        rec.response(
            started,
            status,
            resp.headers.get("X-Process-Time"),
            len(body),
            body if not 200 <= status < 300 else b"",
        )

    async def aclose(self) -> None:
        await self.session.close()


def make_client(target: Target, plan: LoadPlan) -> HttpEngine:
    """The engine the plan names, sized for its connections."""
    if plan.engine == "aiohttp":
        return AiohttpClient(
            target, timeout=plan.timeout, connections=plan.connections, insecure=plan.insecure
        )
    return RawClient(target, timeout=plan.timeout, insecure=plan.insecure)
