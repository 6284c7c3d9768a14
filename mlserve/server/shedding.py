"""Refusing predictions at overload for next to nothing.

While every queue a prediction request could reach would refuse it (batching.max_queue_delay_ms,
batching.max_queue: ModelManager.saturated), the request is answered 503 + Retry-After as soon
as its head is read: by the connection itself (LimitedHttpToolsProtocol asks `Shedder.refusal`
and writes pre-rendered bytes, no ASGI task, no body parsed), or by RequestContextMiddleware
where the protocol cannot (a pipelined request, another HTTP implementation). A refusal is
counted in the request metrics like any answer. The connection's refusals are not written to the
access log one line each (under overload that line would cost more than the refusal): the first
after a quiet spell is logged at once (logger mlserve.overload, WARNING), then one summary line
per SUMMARY_EVERY_S with the count.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from mlserve.server.errors import error_body, v2_error_body
from mlserve.server.ids import RequestIds
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics

__all__ = ["SHED_MESSAGE", "SHED_STATE_KEY", "Shedder"]

log = logging.getLogger("mlserve.overload")

# The key of the app's lifespan state under which the protocol finds the Shedder.
SHED_STATE_KEY = "mlserve.shed"
SHED_MESSAGE = (
    "every model is at capacity (batching.max_queue_delay_ms, batching.max_queue); retry shortly"
)
SUMMARY_EVERY_S = 10.0
_ROUTES = {"/api/predict": "/api/predict", "/api/predict/batch": "/api/predict/batch"}
_V2_INFER = re.compile(r"^/v2/models/([^/]+)/infer$")
_V2_TEMPLATE = "/v2/models/{name}/infer"
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_RID = "@@request-id@@"  # where the request id goes in a pre-rendered body


class Shedder:
    """Which prediction requests to refuse now, and the bytes of the refusal."""

    def __init__(self, manager: ModelManager, metrics: ServerMetrics, ids: RequestIds) -> None:
        self.manager = manager
        self.metrics = metrics
        self.ids = ids
        self.refused = 0  # since the last summary line
        self.first_refused = 0.0  # when the first of those was refused
        self.logged_at = float("-inf")  # the first refusal after a quiet spell is logged at once
        api = error_body("overloaded", SHED_MESSAGE, _RID)
        self._api_body = tuple(api.split(_RID.encode()))
        self._v2_body = v2_error_body(SHED_MESSAGE)

    def saturated_route(self, path: str) -> str | None:
        """The route template of a prediction path whose every queue is full, else None."""
        template = _ROUTES.get(path)
        if template is not None:
            return template if self.manager.saturated() else None
        match = _V2_INFER.match(path)
        if match is not None and self.manager.saturated(match.group(1)):
            return _V2_TEMPLATE
        return None

    def count(self, template: str, elapsed: float) -> None:
        """Count one refusal (request metrics, error counter, the periodic log summary)."""
        self.metrics.requests.labels("POST", template, "503").inc()
        self.metrics.request_latency.labels("POST", template, "503").observe(elapsed)
        self.metrics.errors.labels("overloaded").inc()
        now = time.monotonic()
        if not self.refused:
            self.first_refused = now
        self.refused += 1
        if now - self.logged_at >= SUMMARY_EVERY_S:
            log.warning(
                "overloaded: refused %d prediction request(s) (503) in the last %.1f s "
                "(batching.max_queue_delay_ms, batching.max_queue)",
                self.refused,
                now - self.first_refused,
            )
            self.refused = 0
            self.logged_at = now

    def refusal(
        self,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        keep_alive: bool,
        default_headers: Iterable[tuple[bytes, bytes]],
        started: float,
    ) -> bytes | None:
        """The complete HTTP/1.1 503 answer to a POST to `path` when it is to be refused now,
        else None; `started` (perf_counter) is when the request began, for its timing. The
        X-Request-ID is the client's (when safe) or a new one, as everywhere."""
        try:
            text = path.decode("ascii")
        except UnicodeDecodeError:
            return None
        if "%" in text:
            return None  # an encoded path: left to the app, which decodes it
        template = self.saturated_route(text)
        if template is None:
            return None
        elapsed = time.perf_counter() - started  # since the request's first byte was parsed
        self.count(template, elapsed)
        rid = b""
        for name, value in headers:
            if name == b"x-request-id":
                if _SAFE_ID.fullmatch(value):
                    rid = value
                break
        if not rid:
            rid = self.ids.new().encode()
        if template is _V2_TEMPLATE:
            body = self._v2_body
        else:
            body = rid.join(self._api_body)
        lines = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
        lines += [
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"retry-after: 1\r\nx-request-id: ",
            rid,
            b"\r\nx-process-time: %.3f\r\nserver-timing: app;dur=%.3f\r\n"
            % (elapsed * 1000.0, elapsed * 1000.0),
            b"\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(lines)
