"""Where requests' outcomes go (Recorder), how failures are named, and what an engine is."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from array import array
from typing import Protocol

from mlserve.loadtest.options import ERROR_SAMPLES

__all__ = [
    "HttpEngine",
    "InvalidResponseError",
    "Recorder",
    "ServerDisconnectedError",
    "describe_failure",
]


class Recorder:
    """Where one phase's outcomes go; the hot path only appends and bumps counters."""

    __slots__ = (
        "lat",
        "srv",
        "codes",
        "failures",
        "samples",
        "bytes_in",
        "bytes_out",
        "errors",
        "last_end",
    )

    def __init__(self) -> None:
        self.lat: array[float] = array("d")
        self.srv: array[float] = array("d")
        self.codes: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.samples: list[str] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0
        self.last_end = 0.0

    def response(
        self, started: float, status: int, ptime: bytes | str | None, nbytes: int, body: bytes
    ) -> None:
        now = time.perf_counter()
        self.lat.append((now - started) * 1000.0)
        self.last_end = now
        self.codes[status] = self.codes.get(status, 0) + 1
        self.bytes_in += nbytes
        if ptime is not None:
            try:
                self.srv.append(float(ptime))
            except ValueError:
                pass
        if not 200 <= status < 300:
            self.errors += 1
            if len(self.samples) < ERROR_SAMPLES:
                self._sample(f"HTTP {status}: {_snippet(body)}")

    def failure(self, exc: BaseException) -> None:
        self.last_end = time.perf_counter()
        kind = describe_failure(exc)
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            detail = str(exc).strip()
            self._sample(f"{kind}: {detail}" if detail and detail != kind else kind)

    def _sample(self, text: str) -> None:
        if text not in self.samples:
            self.samples.append(text)

    @property
    def done(self) -> int:
        return len(self.lat) + sum(self.failures.values())


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:2048].decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and "message" in err:
            text = f"{err.get('code', 'error')}: {err['message']}"
        elif isinstance(data, dict) and "detail" in data:
            text = str(data["detail"])
    except (json.JSONDecodeError, AttributeError):
        pass
    text = " ".join(text.split())
    return (text[:limit] + "…") if len(text) > limit else (text or "(empty body)")


class ServerDisconnectedError(ConnectionError):
    """The server closed the connection before answering."""


class InvalidResponseError(ConnectionError):
    """The server answered something that is not HTTP/1.1."""


def describe_failure(exc: BaseException) -> str:
    """A short, stable name for a transport failure (the key errors are counted under)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, InvalidResponseError):
        return "invalid HTTP response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    name = type(exc).__name__
    if name == "ClientConnectorError":  # aiohttp wraps the OSError
        inner = getattr(exc, "os_error", None)
        if isinstance(inner, BaseException):
            return describe_failure(inner)
        return "cannot connect"
    if name == "ServerDisconnectedError":
        return "server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return name


class HttpEngine(Protocol):
    """Sends payload i and records the outcome; transport failures are recorded, not raised."""

    async def fire(self, index: int, started: float, rec: Recorder) -> None: ...

    async def aclose(self) -> None: ...
