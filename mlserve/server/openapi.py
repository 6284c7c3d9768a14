"""The OpenAPI document as served: FastAPI drops every null from the examples it publishes
(its encoder excludes None), so an example such as a job's `"finished_at": null` would lose
its field. The component schemas and the routes' documented answers get their examples back
as written, nulls included."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

EXAMPLE_KEYS = ("example", "examples")


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


def _restore_route_examples(app: FastAPI, paths: dict[str, Any]) -> None:
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


def keep_example_nulls(app: FastAPI, modules: Iterable[ModuleType]) -> None:
    """Wrap app.openapi so that component examples are published as written."""
    original: Callable[[], dict[str, Any]] = app.openapi
    examples = model_examples(modules)
    patched = False

    def openapi() -> dict[str, Any]:
        nonlocal patched
        schema = original()  # FastAPI caches the dict: patch it in place once
        if patched:
            return schema
        patched = True
        components = schema.get("components", {}).get("schemas", {})
        for name, written in examples.items():
            component = components.get(name)
            if component is not None and "examples" in component:
                component["examples"] = written
        _restore_route_examples(app, schema.get("paths", {}))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
