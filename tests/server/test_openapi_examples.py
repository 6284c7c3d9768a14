"""Every answer documented in /openapi.json comes with an example, and every example is an
answer the server could really give: it validates against the route's response model (what a
client reads) and against the published schema (what the schemathesis fuzz test checks answers
against), and names exactly the fields a real answer has.

FastAPI drops every null from the examples it publishes (fastapi/fastapi#5559); mlserve puts
the models' examples back as written (mlserve/server/openapi.py), so the published examples
must be exactly the written ones, nulls included."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from mlserve.server.middleware.context import SAFE_REQUEST_ID
from mlserve.server.openapi import api_routes as _api_routes

JSON = "application/json"
# The /api routes, plus the two documented routes outside it.
OTHER_PATHS = {"/", "/metrics"}


@pytest.fixture
def app_client(serve: Callable[..., TestClient]) -> TestClient:
    """A server without models: enough for its schema and its index."""
    return serve()


@pytest.fixture
def openapi(app_client: TestClient) -> dict[str, Any]:
    schema: dict[str, Any] = app_client.get("/openapi.json").json()
    return schema


# ---------------------------------------------------------------------------- helpers
def _operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in openapi["paths"].items():
        if path.startswith("/api/") or path in OTHER_PATHS:
            for method, operation in operations.items():
                yield path, method.upper(), operation


def _success(operation: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The documented 2xx answers that have a body (a 204 has none)."""
    for code, response in operation["responses"].items():
        if code.startswith("2") and response.get("content"):
            yield int(code), response["content"]


def _schema_examples(schema: dict[str, Any], definitions: dict[str, Any]) -> list[Any]:
    """A schema's examples, or those of the members of its anyOf/oneOf."""
    if "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[-1]]
    found = list(schema.get("examples", []))
    for member in schema.get("anyOf", []) + schema.get("oneOf", []):
        found += _schema_examples(member, definitions)
    return found


def _examples(media: dict[str, Any], definitions: dict[str, Any]) -> list[Any]:
    """The media type's own example(s), else those of its schema (what /docs shows)."""
    own = [media["example"]] if "example" in media else []
    own += [named["value"] for named in media.get("examples", {}).values()]
    return own or _schema_examples(media.get("schema", {}), definitions)


def _route(app_client: TestClient, path: str, method: str) -> APIRoute:
    for route in _api_routes(app_client.app.routes):  # type: ignore[attr-defined]
        if route.path == path and method in route.methods:
            return route
    raise AssertionError(f"no route for {method} {path}")


def _model(route: APIRoute, code: int) -> Any:
    """The pydantic type documented for the answer with status `code`."""
    extra = route.responses.get(code, {})
    if "model" in extra:
        return extra["model"]
    assert code == (route.status_code or 200), f"{route.path} {code}: which model?"
    return route.response_model


def _written(route: APIRoute, code: int, adapter: TypeAdapter[Any]) -> list[Any]:
    """The examples as the code states them: on the route's `responses`, else on the model."""
    media = route.responses.get(code, {}).get("content", {}).get(JSON, {})
    schema = adapter.json_schema()
    return _examples({**media, "schema": schema}, schema.get("$defs", {}))


def _json_examples(
    app_client: TestClient, openapi: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], TypeAdapter[Any], list[Any], list[Any]]]:
    """(where, published media type, adapter, published examples, written examples) of every
    JSON answer of every operation that has examples."""
    definitions = openapi["components"]["schemas"]
    for path, method, operation in _operations(openapi):
        route = _route(app_client, path, method)
        for code, response in operation["responses"].items():
            media = response.get("content", {}).get(JSON)
            published = _examples(media, definitions) if media else []
            if not published:
                continue
            adapter: TypeAdapter[Any] = TypeAdapter(_model(route, int(code)))
            yield (
                f"{method} {path} {code}",
                media,
                adapter,
                published,
                _written(route, int(code), adapter),
            )


def _same_keys(example: Any, real: Any, where: str) -> Iterator[str]:
    """Where the example's objects have other keys than the validated, re-dumped value: a
    misspelt field (ignored by validation) or a field the real answers carry but it leaves out."""
    if isinstance(example, dict) and isinstance(real, dict):
        if set(example) != set(real):
            yield f"{where}: keys {sorted(example)} != {sorted(real)}"
        for key in set(example) & set(real):
            yield from _same_keys(example[key], real[key], f"{where}.{key}")
    elif isinstance(example, list) and isinstance(real, list):
        for i, (a, b) in enumerate(zip(example, real, strict=False)):
            yield from _same_keys(a, b, f"{where}[{i}]")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------- tests
def test_every_documented_answer_has_an_example(openapi: dict[str, Any]) -> None:
    definitions = openapi["components"]["schemas"]
    missing = []
    checked = 0
    for path, method, operation in _operations(openapi):
        answers = list(_success(operation))
        if not answers:
            missing.append(f"{method} {path}: no documented 2xx answer with a body")
        for code, content in answers:
            for media_type, media in content.items():
                checked += 1
                examples = _examples(media, definitions)
                if not examples:
                    missing.append(f"{method} {path} {code} {media_type}")
                elif media_type != JSON:  # text: Prometheus, JSON lines
                    assert all(isinstance(e, str) and e for e in examples), (path, media_type)
    assert checked >= 25  # the walk did find the routes
    assert not missing, "answers without an example:\n" + "\n".join(missing)


def test_examples_validate_against_their_response_model(
    app_client: TestClient, openapi: dict[str, Any]
) -> None:
    problems = []
    seen = 0
    for where, _, adapter, published, written in _json_examples(app_client, openapi):
        if published != written:
            problems.append(f"{where}: the published examples are not the written ones")
        for i, example in enumerate(written):
            seen += 1
            try:
                value = adapter.validate_json(json.dumps(example), strict=True)
            except ValidationError as exc:
                problems.append(f"{where} example {i}: {exc}")
                continue
            dumped = adapter.dump_python(value, mode="json")
            problems += _same_keys(example, dumped, f"{where} example {i}")
    assert seen >= 25
    assert not problems, "\n".join(problems)


def test_examples_validate_against_the_published_schema(
    app_client: TestClient, openapi: dict[str, Any]
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis's validator
    components = openapi["components"]
    problems = []
    for where, media, _, _, written in _json_examples(app_client, openapi):
        validator = jsonschema_rs.validator_for({**media["schema"], "components": components})
        for i, example in enumerate(written):
            problems += [
                f"{where} example {i}: {e.message}" for e in validator.iter_errors(example)
            ]
    assert not problems, "\n".join(problems)


def test_index_example_has_the_real_answers_fields(
    app_client: TestClient, openapi: dict[str, Any]
) -> None:
    example = openapi["paths"]["/"]["get"]["responses"]["200"]["content"][JSON]["example"]

    real = app_client.get("/").json()

    assert not list(_same_keys(example, real, "GET /"))
    assert example["links"] == real["links"]


def _values(example: Any, keys: set[str]) -> Iterator[str]:
    if isinstance(example, dict):
        for key, value in example.items():
            if key in keys and isinstance(value, str):
                yield value
            yield from _values(value, keys)
    elif isinstance(example, list):
        for value in example:
            yield from _values(value, keys)


def test_example_ids_look_like_the_servers(app_client: TestClient, openapi: dict[str, Any]) -> None:
    """Request ids: 32 hex digits (a batch row's adds -<index>); job ids: a UUID4's hex."""
    examples = [e for *_, written in _json_examples(app_client, openapi) for e in written]
    request_ids = list(_values(examples, {"request_id", "id"}))
    job_ids = list(_values(examples, {"job_id"}))

    assert request_ids
    assert job_ids
    for request_id in request_ids:
        assert re.fullmatch(r"[0-9a-f]{32}(-\d+)?", request_id), request_id
        assert SAFE_REQUEST_ID.fullmatch(request_id)
    for job_id in job_ids:
        assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", job_id), job_id
