"""Pure-ASGI request middleware: request id, timing headers (X-Process-Time, Server-Timing),
body limit, metrics, access log."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.logs import AccessLog
from mlserve.server.errors import send_error
from mlserve.server.ids import RequestIds
from mlserve.server.shedding import RESERVED_KEY, SHED_MESSAGE, Shedder
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.state import AppState

log = logging.getLogger(__name__)
access_log = logging.getLogger("mlserve.access")

SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Async job submissions (JSON or a file upload) carry up to jobs.max_items inputs: they are
# limited by jobs.max_body_bytes, every other route by server.max_body_bytes.
JOB_SUBMIT_ROUTES = frozenset({("POST", "/api/predict/async")})
# `%` and the space characters that are not control characters (those are escaped, not
# encoded, by the log formatters).
_FIELD_BREAKS = re.compile("[% \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


class RequestContextMiddleware:
    """Wraps every HTTP request: one place for ids, limits, timing, metrics and logging."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        app_state: AppState,
        shedder: Shedder,
        ids: RequestIds,
        max_body_bytes: int,
        access_log_enabled: bool = True,
    ) -> None:
        self.app = app
        self.shedder = shedder
        self.ids = ids
        self.metrics = metrics
        self.app_state = app_state
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled
        self.access = AccessLog(access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if RESERVED_KEY in scope:  # let in by the connection: its place is given back
            self.shedder.release(scope)
        started = time.perf_counter()
        request_id = request_id_of_headers(scope, self.ids)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = [500]
        response_started = False
        limit = self._body_limit(scope)

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(
                scope, send, 413, "payload_too_large",
                f"request body is {declared} bytes; the limit is {limit}",
                headers=_context_headers(request_id, started, close=True),
            )  # fmt: skip
            self._record(scope, 413, started, request_id)
            return

        if scope.get("method") == "POST" and self._shed(scope):
            # Overloaded: answered before the body is read, parsed or validated, so that the
            # event loop spends next to nothing on what it cannot serve (and keeps turns for
            # the requests it admitted). The connection stays open.
            await send_error(
                scope, send, 503, "overloaded", SHED_MESSAGE, metrics=self.metrics,
                headers=[*_context_headers(request_id, started), (b"retry-after", b"1")],
            )  # fmt: skip
            self._record(scope, 503, started, request_id)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                elapsed = f"{(time.perf_counter() - started) * 1000.0:.3f}".encode()
                headers.append((b"x-process-time", elapsed))
                headers.append((b"server-timing", b"app;dur=" + elapsed))
                message["headers"] = headers
            await send(message)

        self.metrics.in_flight.inc()
        self.app_state.open_requests += 1
        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            log.exception(
                "[%s] unhandled error on %s %s",
                request_id,
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": request_id},
            )
            if not response_started:
                await send_error(
                    scope, send, 500, "internal_error", "internal server error",
                    metrics=self.metrics, headers=_context_headers(request_id, started, close=True),
                )  # fmt: skip
            else:
                self.metrics.errors.labels("internal_error").inc()
            status_holder[0] = 500
        finally:
            self.metrics.in_flight.dec()
            self.app_state.open_requests -= 1
            self._record(scope, status_holder[0], started, request_id)

    def _shed(self, scope: Scope) -> bool:
        """A prediction request that every queue it could reach would refuse (503). Most are
        refused by the connection before they get here (LimitedHttpToolsProtocol); this is
        the path of a pipelined request, or of a server run with another protocol."""
        template = self.shedder.saturated_route(scope.get("path", ""))
        if template is None:
            return False
        scope["state"]["route"] = template
        return True

    def _body_limit(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if (scope.get("method"), path) in JOB_SUBMIT_ROUTES:
            return self.app_state.settings.jobs.max_body_bytes
        return self.max_body_bytes

    def _record(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        state = scope.get("state", {})
        # Routed requests carry their route; the predict fast lane names its template in state.
        template = getattr(scope.get("route"), "path", None) or state.get("route") or "unmatched"
        method = scope.get("method", "")
        code = str(status)  # a few dozen values at most: bounded like method and route
        self.metrics.requests.labels(method, template, code).inc()
        self.metrics.request_latency.labels(method, template, code).observe(elapsed)
        if not self.access_log_enabled or not access_log.isEnabledFor(logging.INFO):
            return
        model, version = state.get("model"), state.get("version")
        principal = getattr(state.get("principal"), "name", None)
        # The text line is space-separated fields: a space in the path or a name is written
        # %20 (and % as %25) so that no value can pass for the fields after it. Control
        # characters are escaped by the formatters (mlserve.logs), in every record.
        self.access.info(
            "%s %s %d %.1fms rid=%s principal=%s%s",
            method,
            log_field(scope.get("path", "")),
            status,
            elapsed * 1000.0,
            request_id,
            log_field(principal) if principal else "-",
            f" model={log_field(model)}:{version}" if model else "",
            fields={
                "method": method,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(elapsed * 1000.0, 3),
                "request_id": request_id,
                "model": model,
                "version": version,
                # Who called (a key's name or a JWT subject), never the credential.
                "principal": principal,
            },
        )


def log_field(text: str) -> str:
    """`text` as one field of a space-separated log line: `%` and every space character
    (Unicode ones included) percent-encoded."""
    return _FIELD_BREAKS.sub(_percent_encode, text)


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def request_id_of_headers(scope: Scope, ids: RequestIds) -> str:
    """The client's X-Request-ID when it is safe to echo, else a new one."""
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if SAFE_REQUEST_ID.fullmatch(text):  # match() would let "id\n" through ($)
                return text
            break
    return ids.new()


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _context_headers(request_id: str, started: float, *, close: bool = False
                     ) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """The headers every answer gets here, for answers this middleware writes itself."""
    elapsed = f"{(time.perf_counter() - started) * 1000.0:.3f}".encode()
    headers = [
        (b"x-request-id", request_id.encode()),
        (b"x-process-time", elapsed),
        (b"server-timing", b"app;dur=" + elapsed),  # the same figure, for browsers' dev tools
    ]
    if close:
        headers.append((b"connection", b"close"))
    return headers
