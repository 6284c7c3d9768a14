"""Every customisation of the OpenAPI document, applied once in one place.

FastAPI builds the document from the routes and caches it; `install_openapi` wraps
`app.openapi` a single time and edits that document in order:
1. errors as the handlers send them (the error shape, 400 on /v2, 413 where a body is taken);
2. examples as written: FastAPI drops every null from the examples it publishes (its encoder
   excludes None), so a job's `"finished_at": null` would lose its field;
3. the 429 answer on rate-limited operations (when rate limiting is on);
4. security schemes, open routes and 401/403 answers from the access policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from mlserve.server.errors import is_v2_path

if TYPE_CHECKING:
    from mlserve.server.auth import AccessPolicy

__all__ = ["api_routes", "error_content", "install_openapi", "model_examples"]

EXAMPLE_KEYS = ("example", "examples")
VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
SECURITY_SCHEMES: dict[str, Any] = {
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `mlserve keys create`, or a JWT when configured.",
    },
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
Schema = dict[str, Any]


def install_openapi(
    app: FastAPI,
    *,
    modules: Iterable[ModuleType],
    policy: AccessPolicy | None = None,
    rate_limit_exempt: frozenset[str] | None = None,
) -> None:
    """Wrap app.openapi once: `modules` hold the pydantic models whose written examples are
    published; `policy` documents auth; `rate_limit_exempt` (when rate limiting is on) names
    the paths that never get a 429."""
    original: Callable[[], Schema] = app.openapi
    examples = model_examples(modules)
    patched = False

    def openapi() -> Schema:
        nonlocal patched
        schema = original()  # FastAPI caches the dict: patch it in place once
        if patched:
            return schema
        patched = True
        document_errors(schema)
        restore_examples(app, schema, examples)
        if rate_limit_exempt is not None:
            document_rate_limit(schema, rate_limit_exempt)
        if policy is not None:
            document_security(schema, policy)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_content(schemas: Schema, path: str) -> Schema:
    """The documented body of an error answer on `path` (the V2 shape on /v2 paths)."""
    name = "V2ErrorResponse" if is_v2_path(path) else "ErrorResponse"
    schema = {"$ref": f"#/components/schemas/{name}"} if name in schemas else {"type": "object"}
    return {"application/json": {"schema": schema}}


# ---------------------------------------------------------------------------- errors
def _is_fastapi_validation(response: Schema) -> bool:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return bool(ref == "#/components/schemas/HTTPValidationError")


def document_errors(schema: Schema) -> None:
    """FastAPI declares its own 422 body (HTTPValidationError); the handlers answer in the
    error shape, and on /v2 with 400 in the protocol's shape. The body limit (413) holds on
    every route that takes a body."""
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
                    {"description": "Request body over server.max_body_bytes.", "content": content},
                )
    text = orjson.dumps(schema.get("paths", {}))
    for unused in VALIDATION_SCHEMAS:
        if f"#/components/schemas/{unused}".encode() not in text:
            schemas.pop(unused, None)


# ---------------------------------------------------------------------------- examples
def model_examples(modules: Iterable[ModuleType]) -> dict[str, list[Any]]:
    """Component name → the examples written on the pydantic model of that name."""
    out: dict[str, list[Any]] = {}
    for module in modules:
        for name, obj in vars(module).items():
            if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
                continue
            extra = obj.model_config.get("json_schema_extra")
            written = extra.get("examples") if isinstance(extra, dict) else None
            if isinstance(written, list):
                out[name] = written
    return out


def api_routes(routes: Iterable[Any]) -> Iterable[APIRoute]:
    """Every APIRoute, into included routers (FastAPI >= 0.165 keeps an included router as one
    route holding the original)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:
            inner = getattr(route, "original_router", route)
            yield from api_routes(getattr(inner, "routes", []))


def restore_examples(app: FastAPI, schema: Schema, examples: dict[str, list[Any]]) -> None:
    """Component and route examples published as written, nulls included."""
    components = schema.get("components", {}).get("schemas", {})
    for name, written in examples.items():
        component = components.get(name)
        if component is not None and "examples" in component:
            component["examples"] = written
    paths = schema.get("paths", {})
    for route in api_routes(app.routes):
        operations = paths.get(route.path, {})
        for method in route.methods or ():
            answers = operations.get(method.lower(), {}).get("responses", {})
            for code, documented in (route.responses or {}).items():
                published = answers.get(str(code), {}).get("content", {})
                for media_type, media in (documented.get("content") or {}).items():
                    target = published.get(media_type)
                    if target is None:
                        continue
                    for key in EXAMPLE_KEYS:
                        if key in media:
                            target[key] = media[key]


# ---------------------------------------------------------------------------- rate limit
def document_rate_limit(schema: Schema, exempt: frozenset[str]) -> None:
    """The 429 answer on every limited operation."""
    schemas = schema.get("components", {}).get("schemas", {})
    for path, operations in schema.get("paths", {}).items():
        if path in exempt:
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault(
                    "429",
                    {
                        "description": "Rate limit exceeded; retry after Retry-After seconds.",
                        "content": error_content(schemas, path),
                    },
                )


# ---------------------------------------------------------------------------- security
def document_security(schema: Schema, policy: AccessPolicy) -> None:
    """Bearer and X-API-Key security (the Authorize button in /docs), open routes marked as
    needing none, and 401/403 on the others."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    schemas = components.get("schemas", {})
    schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            access = policy.required(method.upper(), path)
            if access == "open":
                operation["security"] = []
                continue
            responses = operation.setdefault("responses", {})
            content = error_content(schemas, path)
            responses.setdefault(
                "401",
                {"description": "Missing, wrong, expired or revoked credentials.",
                 "content": content},
            )  # fmt: skip
            responses.setdefault(
                "403",
                {"description": f"The caller lacks the '{access}' role.", "content": content},
            )
            if access == "admin":
                text = operation.get("description", "")
                operation["description"] = (text + "\n\n" if text else "") + (
                    "Requires the `admin` role."
                )
