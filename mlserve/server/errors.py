"""The one translation point from exceptions to the JSON error shape."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlserve.errors import MlserveError

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


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render {"error": {"code", "message", "request_id"}} and count it."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    state = request.scope.setdefault("state", {})
    state["error_code"] = code
    if is_v2_path(request.scope.get("path", "")):
        # Open Inference Protocol shape ({"error": "<message>"}, what tritonclient reads); the
        # protocol answers invalid requests with 400 where /api uses 422.
        return Response(
            v2_error_body(message),
            status_code=400 if status == 422 else status,
            headers=headers,
            media_type="application/json",
        )
    return Response(
        error_body(code, message, request_id_of(request)),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


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


def redact_paths(message: str, *roots: Path) -> str:
    """`message` without the server's file paths under `roots` (a registry error names its
    files; the server log keeps them, clients get the rest of the message)."""
    for root in roots:
        if len(root.parts) < 2:
            continue  # never "/" (it would eat every absolute path, routes included)
        message = re.sub(rf"\s*{re.escape(str(root))}[^\s:;,)]*", "", message)
    return message


def _server_roots(request: Request) -> tuple[Path, ...]:
    state = getattr(request.app.state, "mlserve", None)
    if state is None:
        return ()
    return (state.registry.root, state.settings.home)


def install_error_handlers(app: FastAPI) -> None:
    """MlserveError, validation and HTTP errors become the error shape; anything else is
    caught by the request middleware as a plain 500."""

    async def on_mlserve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MlserveError)  # noqa: S101 - registered for this type only
        if exc.status_code >= 500:
            rid = request_id_of(request)
            log.warning("[%s] %s: %s", rid, exc.code, exc.message, extra={"request_id": rid})
        message = redact_paths(exc.message, *_server_roots(request))
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
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}"
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))

    app.add_exception_handler(MlserveError, on_mlserve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    install_openapi_errors(app)


VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return bool(ref == "#/components/schemas/HTTPValidationError")


def install_openapi_errors(app: FastAPI) -> None:
    """Document the errors as the handlers send them. FastAPI declares its own 422 body
    (HTTPValidationError); the handlers answer in the error shape, and on /v2 with 400 in the
    protocol's shape. The body limit (413) holds on every route that takes a body."""
    original = app.openapi
    patched = False

    def openapi() -> dict[str, Any]:
        nonlocal patched
        schema = original()  # FastAPI caches the dict: patch it in place once
        if patched:
            return schema
        patched = True
        schemas = schema.get("components", {}).get("schemas", {})
        for path, operations in schema.get("paths", {}).items():
            v2 = is_v2_path(path)
            name = "V2ErrorResponse" if v2 else "ErrorResponse"
            if name not in schemas:
                continue
            content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
            for operation in operations.values():
                responses = operation.get("responses") if isinstance(operation, dict) else None
                if responses is None:
                    continue
                validation = responses.get("422")
                if validation is not None and _is_fastapi_validation(validation):
                    if v2:
                        del responses["422"]
                        responses.setdefault(
                            "400", {"description": "Invalid request.", "content": content}
                        )
                    else:
                        responses["422"] = {
                            "description": "Invalid input (the message names the field).",
                            "content": content,
                        }
                if "requestBody" in operation:
                    responses.setdefault(
                        "413",
                        {"description": "Request body over server.max_body_bytes.",
                         "content": content},
                    )  # fmt: skip
        text = orjson.dumps(schema.get("paths", {}))
        for unused in VALIDATION_SCHEMAS:
            if f"#/components/schemas/{unused}".encode() not in text:
                schemas.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
