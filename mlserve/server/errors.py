"""The one translation point from exceptions to the JSON error shape."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope, Send

from mlserve.errors import MlserveError, OverloadedError, redact_paths
from mlserve.server.refusals import refusals
from mlserve.server.scope import route_path

if TYPE_CHECKING:
    from mlserve.serving.metrics import ServerMetrics
    from mlserve.serving.state import AppState

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return str(value) if value is not None else None


def render_error(status: int, code: str, message: str, *, path: str, request_id: str | None
                 ) -> tuple[int, bytes]:  # fmt: skip
    """(status, body) of an error answer: {"error": {"code", "message", "request_id"}}, or on
    the Open Inference Protocol (V2) paths {"error": "<message>"} (what tritonclient reads),
    where invalid requests are 400 rather than 422."""
    if is_v2_path(path):
        return (400 if status == 422 else status), v2_error_body(message)
    return status, error_body(code, message, request_id)


def note_error(scope: Scope, code: str, metrics: ServerMetrics | None) -> None:
    """Count an error answer and name its code for the request metrics and access log."""
    scope.setdefault("state", {})["error_code"] = code
    if metrics is not None:
        metrics.errors.labels(code).inc()


def public_message(exc: MlserveError, scope: Scope, roots: Sequence[Path]) -> str:
    """The message a client may see: the server's file paths removed; a 5xx is logged with
    the request id (as every error path logs it), but an overload refusal is only counted in
    the periodic summary (mlserve.server.refusals): under overload a line each cost more than
    the refusal."""
    if isinstance(exc, OverloadedError):
        refusals.note()
    elif exc.status_code >= 500:
        rid = scope.get("state", {}).get("request_id")
        log.warning("[%s] %s: %s", rid, exc.code, exc.message, extra={"request_id": rid})
    return redact_paths(exc.message, *roots) if roots else exc.message


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    metrics: ServerMetrics | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the error shape from pure ASGI (middlewares and the fast lane)."""
    note_error(scope, code, metrics)
    status, body = render_error(
        status, code, message, path=route_path(scope),
        request_id=scope.get("state", {}).get("request_id"),
    )  # fmt: skip
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_exception(
    scope: Scope,
    send: Send,
    exc: MlserveError,
    *,
    metrics: ServerMetrics | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    roots: Sequence[Path] = (),
) -> None:
    """Answer an MlserveError from pure ASGI, as the routes' exception handler does."""
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers().items()]
    out.extend(headers)
    message = public_message(exc, scope, roots)
    await send_error(scope, send, exc.status_code, exc.code, message, metrics=metrics, headers=out)


def server_roots(state: AppState | None) -> tuple[Path, ...]:
    """Directories whose paths never reach a client (the registry's and the home's)."""
    if state is None:
        return ()
    return (state.registry.root, state.settings.home)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render the error shape as a Response (the FastAPI exception handlers) and count it."""
    note_error(request.scope, code, getattr(request.app.state, "metrics", None))
    status, body = render_error(
        status, code, message, path=request.scope.get("path", ""),
        request_id=request_id_of(request),
    )  # fmt: skip
    return Response(body, status_code=status, headers=headers, media_type="application/json")


# Methods a 405's Allow header may list.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route answers on the request's path. Starlette's 405 names only the
    methods of the first route matching the path, and FastAPI makes one route per method."""
    routes = app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]


_UNION_TAG = re.compile(r"[\[\]]")


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """'field: problem' for each pydantic error, naming the field by its dotted path."""
    described: list[tuple[str, str, str]] = []
    for err in errors:
        # Drop "body" and pydantic's union-member tags like "dict[str,nullable[float]]".
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _UNION_TAG.search(str(p))]
        field = ".".join(loc) or "body"
        kind = str(err.get("type", ""))
        msg = err.get("msg", "invalid")
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "model_attributes_type" and isinstance(err.get("input"), bytes):
            msg = "not read as JSON: send it with Content-Type: application/json"
        elif kind == "json_invalid":
            field, msg = "body", f"invalid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        described.append((field, kind, msg))
    # A union (object or list) reports every member; keep the member that got further.
    deeper = {f for f, _, _ in described}
    kept = [
        (f, m)
        for f, k, m in described
        if not (k in ("dict_type", "list_type") and any(o.startswith(f + ".") for o in deeper))
    ]
    parts = [f"{f}: {m}" for f, m in kept[:5]]
    more = f" (+{len(kept) - 5} more)" if len(kept) > 5 else ""
    return "; ".join(parts) + more


def error_body(code: str, message: str, request_id: str | None) -> bytes:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    try:
        return orjson.dumps(body)
    except TypeError:  # a lone surrogate quoted from the request: not UTF-8, cannot be sent
        body["error"]["message"] = message.encode("utf-8", "replace").decode()
        return orjson.dumps(body)


def is_v2_path(path: str) -> bool:
    """Paths of the Open Inference Protocol (V2) routes, whose errors have their own shape."""
    return path == "/v2" or path.startswith("/v2/")


def v2_error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def install_error_handlers(app: FastAPI) -> None:
    """MlserveError, validation and HTTP errors become the error shape; anything else is a
    plain 500 in the same shape (logged by the request middleware)."""

    async def on_mlserve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MlserveError)  # noqa: S101 - registered for this type only
        roots = server_roots(getattr(request.app.state, "mlserve", None))
        message = public_message(exc, request.scope, roots)
        return error_response(request, exc.status_code, exc.code, message, exc.headers())

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
        return error_response(
            request, 422, "invalid_input", describe_validation_errors(list(exc.errors()))
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}"
        elif exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = (
                    f"{request.method} is not allowed on {request.url.path}; use {headers['Allow']}"
                )
        return error_response(request, exc.status_code, code, message, headers)

    async def on_unhandled(request: Request, exc: Exception) -> Response:
        # FastAPI's outermost handler answers with it, then re-raises: the request middleware
        # (outside FastAPI) logs the error with its request id and counts it.
        return error_response(request, 500, "internal_error", "internal server error")

    app.add_exception_handler(Exception, on_unhandled)
    app.add_exception_handler(MlserveError, on_mlserve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
