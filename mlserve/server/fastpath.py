"""The hot path: well-formed POST /api/predict requests answered without FastAPI's per-request
machinery (routing, dependency solving, body model validation). Anything unusual — invalid
JSON, unknown fields, wrong types, an input the model refuses, a CORS request — is handed to the
full FastAPI route with the body replayed, so errors and edge cases are answered by one code path.
"""

from __future__ import annotations

import gzip
import logging
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.errors import MlserveError
from mlserve.server.errors import error_body
from mlserve.server.jsonbody import loads
from mlserve.server.routes.predict import _count, _item
from mlserve.server.state import AppState

log = logging.getLogger(__name__)

PREDICT_PATH = "/api/predict"
FIELDS = frozenset({"text", "features", "model", "model_version"})
JSON_HEADER = (b"content-type", b"application/json")
CACHE_HIT = (b"x-cache", b"hit")
CACHE_MISS = (b"x-cache", b"miss")


class FastPredictMiddleware:
    """Answers the common case of /api/predict directly; delegates everything else."""

    def __init__(self, app: ASGIApp, *, app_state: AppState) -> None:
        self.app = app
        self.state = app_state
        self.traffic = app_state.traffic
        self.feedback = app_state.feedback  # None when feedback.enabled is off
        self.gzip_min = app_state.settings.server.gzip_min_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        accepts_gzip = False
        json_body = False
        for key, value in scope["headers"]:
            if key == b"origin":  # CORS: let the CORS middleware answer
                await self.app(scope, receive, send)
                return
            if key == b"accept-encoding" and b"gzip" in value:
                accepts_gzip = True
            elif key == b"content-type":
                json_body = _is_json(value)
        if not json_body:
            # Without a JSON Content-Type the route refuses the body (422), as on every route:
            # no text/plain "simple" cross-origin request gets a prediction either.
            await self.app(scope, receive, send)
            return
        # Named for the request metrics, which otherwise only know routed requests' templates.
        scope["state"]["route"] = PREDICT_PATH
        try:
            body = await _read_body(receive)
        except HTTPException as exc:  # body over the limit (raised by the request middleware)
            self.state.metrics.errors.labels("payload_too_large").inc()
            scope["state"]["error_code"] = "payload_too_large"
            await _send(send, exc.status_code, error_body(
                "payload_too_large", str(exc.detail), scope["state"].get("request_id")
            ))  # fmt: skip
            return
        handled = await self._try(scope, body, send, started, accepts_gzip)
        if not handled:
            await self.app(scope, _replay(body, receive), send)

    async def _try(
        self, scope: Scope, body: bytes, send: Send, started: float, accepts_gzip: bool
    ) -> bool:
        request = _parse(body)
        if request is None:
            return False
        text, features, model_ref, model_version = request
        traffic = self.traffic
        try:
            # Each traffic feature costs one attribute test here while it is off.
            if traffic.splits:
                runtime = await traffic.select(model_ref, model_version, scope)
            else:
                runtime = await self.state.manager.get(model_ref, model_version)
            row = runtime.model.prepare(text=text, features=features)
        except MlserveError:
            return False  # the full route raises the same error and renders it
        state = scope["state"]
        state["model"] = runtime.model.name
        state["version"] = runtime.model.version
        hit: bool | None = None
        try:
            if traffic.cache is None:
                result = await runtime.batcher.submit(row)
            else:
                result, hit = await traffic.predict(runtime, row)
        except MlserveError as exc:
            self.state.metrics.errors.labels(exc.code).inc()
            state["error_code"] = exc.code
            if exc.status_code >= 500:  # as the routes' error handler logs it (errors.py)
                rid = state.get("request_id")
                log.warning("[%s] %s: %s", rid, exc.code, exc.message, extra={"request_id": rid})
            await _send(
                send,
                exc.status_code,
                error_body(exc.code, exc.message, state.get("request_id")),
                [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()],
            )
            return True
        _count(self.state.metrics, runtime, [result])
        if traffic.shadows:
            traffic.mirror(runtime, [row], [result])
        model = runtime.model
        request_id = state.get("request_id")
        if self.feedback is not None and request_id is not None:  # as routes/predict.py does
            self.feedback.record(request_id, model.name, model.version, row, result)
        payload = _item(result)
        payload["model"] = model.name
        payload["version"] = model.version
        payload["processing_time_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        payload["request_id"] = request_id
        out = orjson.dumps(payload)
        extra: list[tuple[bytes, bytes]] = []
        if hit is not None:
            extra.append(CACHE_HIT if hit else CACHE_MISS)
        if accepts_gzip and len(out) >= self.gzip_min:
            out = gzip.compress(out, compresslevel=9)
            extra += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        await _send(send, 200, out, extra)
        return True


def _parse(body: bytes) -> tuple[Any, Any, str | None, int | str | None] | None:
    """The four fields of a well-formed request, or None to let the full route decide."""
    try:
        data = loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= FIELDS:
        return None
    text = data.get("text")
    features = data.get("features")
    model = data.get("model")
    version = data.get("model_version")
    if (text is None) == (features is None):
        return None
    if text is not None and type(text) is not str:
        return None
    if features is not None and type(features) not in (dict, list):
        return None
    if model is not None and type(model) is not str:
        return None
    if version is not None and type(version) not in (int, str):
        return None
    return text, features, model, version


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [JSON_HEADER, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
