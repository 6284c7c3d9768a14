"""Refusing predictions at overload for next to nothing.

While every queue a prediction request could reach would refuse it (batching.max_queue_delay_ms,
batching.max_queue: ModelManager.saturated), the request is answered 503 + Retry-After as soon
as its head is read: by the connection itself (LimitedHttpToolsProtocol asks `Shedder.refusal`
and writes pre-rendered bytes, no ASGI task, no body parsed), or by RequestContextMiddleware
where the protocol cannot (a pipelined request, another HTTP implementation). A refusal is
counted in the request metrics like any answer. The connection's refusals are not written to the
access log one line each (under overload that line would cost more than the refusal): they are
summed up in mlserve.server.refusals (one WARNING line per spell, logger mlserve.overload).

/api/predict/batch is judged by the fewest rows of the model's recent submissions
(Batcher.recent_rows), not by one row: under an overload of batches of 50 texts nearly every
batch was otherwise parsed, validated and refused by the route (OverloadedError), at ~20x the
cost of a refusal here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from starlette.types import Scope

from mlserve.server.errors import error_body, v2_error_body
from mlserve.server.ids import RequestIds
from mlserve.server.refusals import refusals
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics

__all__ = ["RESERVED_KEY", "SHED_MESSAGE", "SHED_STATE_KEY", "Shedder"]

# The key of the app's lifespan state under which the protocol finds the Shedder.
SHED_STATE_KEY = "mlserve.shed"
# The scope key of a prediction request let in by the connection, until its task starts.
RESERVED_KEY = "mlserve.reserved"
SHED_MESSAGE = (
    "every model is at capacity (batching.max_queue_delay_ms, batching.max_queue); retry shortly"
)
_PREDICT = "/api/predict"
_BATCH = "/api/predict/batch"
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
        # Prediction requests the connection let in whose tasks have not started yet: counted
        # as queued when the next ones are judged. The requests read in one event-loop turn
        # were otherwise all judged against the same queue (their tasks run in the next
        # turn) and all let in, to be refused one by one by the request middleware at many
        # times the cost of a refusal here.
        self.reserved = 0
        api = error_body("overloaded", SHED_MESSAGE, _RID)
        self._api_body = tuple(api.split(_RID.encode()))
        self._v2_body = v2_error_body(SHED_MESSAGE)

    def saturated_route(self, path: str, ahead: int = 0) -> str | None:
        """The route template of a prediction path whose every queue is full, else None;
        `ahead`: requests let in but not queued yet, counted as queued."""
        manager = self.manager
        if path == _PREDICT:
            return _PREDICT if manager.saturated(ahead=ahead) else None
        if path == _BATCH:
            return _BATCH if manager.saturated(batch=True, ahead=ahead) else None
        match = _V2_INFER.match(path)
        if match is not None and manager.saturated(match.group(1), ahead=ahead):
            return _V2_TEMPLATE
        return None

    def release(self, scope: Scope) -> None:
        """The request's task has started (RequestContextMiddleware): its place, reserved
        when the connection let it in (refusal), is given back."""
        if scope.pop(RESERVED_KEY, False):
            self.reserved -= 1

    def count(self, template: str, elapsed: float) -> None:
        """Count one refusal (request metrics, error counter, the periodic log summary)."""
        self.metrics.requests.labels("POST", template, "503").inc()
        self.metrics.request_latency.labels("POST", template, "503").observe(elapsed)
        self.metrics.errors.labels("overloaded").inc()
        refusals.note()

    def refusal(
        self,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        keep_alive: bool,
        default_headers: Iterable[tuple[bytes, bytes]],
        started: float,
        scope: Scope | None = None,
    ) -> bytes | None:
        """The complete HTTP/1.1 503 answer to a POST to `path` when it is to be refused now,
        else None; `started` (perf_counter) is when the request began, for its timing. The
        X-Request-ID is the client's (when safe) or a new one, as everywhere. A prediction
        let in with its `scope` reserves a place until its task starts (release)."""
        try:
            text = path.decode("ascii")
        except UnicodeDecodeError:
            return None
        if "%" in text:
            return None  # an encoded path: left to the app, which decodes it
        template = self.saturated_route(text, self.reserved)
        if template is None:
            if scope is not None and _is_prediction(text):
                scope[RESERVED_KEY] = True
                self.reserved += 1
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


def _is_prediction(path: str) -> bool:
    return path == _PREDICT or path == _BATCH or _V2_INFER.match(path) is not None
