"""The fast lane for POST /api/predict and /api/predict/batch: match, read, parse, encode —
nothing else.

Well-formed requests skip FastAPI's per-request machinery (routing, dependency solving) but
not its rules: the body is validated by the same request model the route uses
(`PredictRequest`, `BatchPredictRequest`), and the prediction goes through the same
PredictionService (a batch through the route's own `score_batch`), whose errors are rendered
by the one error renderer. A body that fails validation, and any CORS request, is handed to
the full FastAPI route with the body replayed, so the route words every validation error.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.errors import MlserveError
from mlserve.schemas import BatchPredictRequest, PredictRequest
from mlserve.server.errors import send_error, send_exception, server_roots
from mlserve.server.jsonbody import loads
from mlserve.server.routes.predict import predict_payload, score_batch
from mlserve.server.scope import client_key, mark_model, route_path
from mlserve.serving.service import input_kind
from mlserve.serving.state import AppState

PREDICT_PATH = "/api/predict"
BATCH_PATH = "/api/predict/batch"
JSON_HEADER = (b"content-type", b"application/json")
CACHE_HIT = (b"x-cache", b"hit")
CACHE_MISS = (b"x-cache", b"miss")
validate_request = PredictRequest.model_validate  # the routes' own request models
validate_batch = BatchPredictRequest.model_validate
Request = TypeVar("Request")


class FastPredictMiddleware:
    """Answers POST /api/predict and /api/predict/batch through the prediction service;
    delegates what it cannot validate (and CORS requests) to the FastAPI routes."""

    def __init__(self, app: ASGIApp, *, app_state: AppState) -> None:
        self.app = app
        self.state = app_state
        self.service = app_state.service
        self.metrics = app_state.metrics
        self.roots = server_roots(app_state)
        self.gzip_min = app_state.settings.server.gzip_min_bytes
        self.max_batch_items = app_state.settings.server.max_batch_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path != PREDICT_PATH and path != BATCH_PATH:
            # Under `serve --root-path` the path starts with the prefix: compared without it.
            path = route_path(scope)
            if path != PREDICT_PATH and path != BATCH_PATH:
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
        scope["state"]["route"] = path
        try:
            body = await _read_body(receive)
        except HTTPException as exc:  # body over the limit (raised by the request middleware)
            await send_error(
                scope, send, exc.status_code, "payload_too_large", str(exc.detail),
                metrics=self.metrics,
            )  # fmt: skip
            return
        validate: Callable[[Any], PredictRequest | BatchPredictRequest] = (
            validate_batch if path == BATCH_PATH else validate_request
        )
        request = _parse(body, validate)
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        # A request waiting its turn holds its rows; not its JSON text as well (~2.7 KB for a
        # batch of 50 short texts; some hundreds wait at once under overload).
        del body
        if isinstance(request, BatchPredictRequest):
            await self._predict_batch(scope, request, send, started, accepts_gzip)
        else:
            await self._predict(scope, request, send, started, accepts_gzip)

    async def _predict(
        self, scope: Scope, body: PredictRequest, send: Send, started: float, accepts_gzip: bool
    ) -> None:
        service = self.service
        request_id = scope["state"].get("request_id")
        try:
            kind = input_kind(body.text, body.features)
            runtime = await service.choose(
                body.model, body.model_version, lambda: client_key(scope), kind=kind
            )
            mark_model(scope, runtime)
            scored = await service.predict(
                runtime, text=body.text, features=body.features, request_id=request_id
            )
            if scored.runtime is not runtime:  # the serving version answered (degraded pick)
                mark_model(scope, scored.runtime)
        except MlserveError as exc:
            await send_exception(scope, send, exc, metrics=self.metrics, roots=self.roots)
            return
        out = orjson.dumps(predict_payload(scored, request_id, started))
        extra: list[tuple[bytes, bytes]] = []
        hit = scored.cache_hit
        if hit is not None:
            extra.append(CACHE_HIT if hit else CACHE_MISS)
        await self._answer(send, out, extra, accepts_gzip)

    async def _predict_batch(
        self,
        scope: Scope,
        body: BatchPredictRequest,
        send: Send,
        started: float,
        accepts_gzip: bool,
    ) -> None:
        try:
            payload, hits = await score_batch(
                body, scope, self.service, self.max_batch_items, started
            )
        except MlserveError as exc:
            await send_exception(scope, send, exc, metrics=self.metrics, roots=self.roots)
            return
        extra = [] if hits is None else [(b"x-cache-hits", str(hits).encode())]
        await self._answer(send, orjson.dumps(payload), extra, accepts_gzip)

    async def _answer(
        self, send: Send, out: bytes, extra: list[tuple[bytes, bytes]], accepts_gzip: bool
    ) -> None:
        if accepts_gzip and len(out) >= self.gzip_min:
            out = gzip.compress(out, compresslevel=9)
            extra += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        await _send(send, 200, out, extra)


def _parse(body: bytes, validate: Callable[[Any], Request]) -> Request | None:
    """The request as the route's model validates it, or None to let the route answer."""
    try:
        return validate(loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


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
