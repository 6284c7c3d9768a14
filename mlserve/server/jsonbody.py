"""JSON request bodies read by orjson on the /api routes, as the predict fast lane reads them.

One parser for the fast lane and the routes behind it, so a body is never accepted by one and
refused by the other. orjson is strict where Python's json module is lax: invalid UTF-8, lone
surrogates (\\ud800), NaN / Infinity tokens, numbers beyond a double and nesting past 1024 levels
are malformed JSON (422 invalid_input), never strings or numbers a route has to defend against.
So are duplicate keys (`{"text": "a", "text": "b"}`): parsers disagree on which one wins, so
mlserve takes neither.

A request that may change state (POST, PUT, PATCH, DELETE) with a Content-Type other than JSON
is refused on these routes, a body or not (`refuse_non_json`): a web page can send a form post
or a text/plain request to any address without asking the server first (a CORS "simple"
request), never one declared as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Scope

from mlserve.errors import InvalidInputError

# Every key of a JSON text ends with `"` then optional whitespace then `:`, so the matches of
# this pattern bound the number of keys from above (strings may hold more matches, never fewer).
_KEY_END = re.compile(rb'"\s*:')
_CONTAINERS = (dict, list)
# Methods whose requests may change state (and carry a body).
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _key_count(value: Any) -> int:
    """Keys of every object in a parsed JSON value (iterative: nesting depth is the client's)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            stack.extend(v for v in item.values() if type(v) in _CONTAINERS)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) in _CONTAINERS)
    return count


class DuplicateKeyError(orjson.JSONDecodeError):
    """A JSON object with the same key twice."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(key)
        out[key] = value
    return out


def loads(body: bytes | str) -> Any:
    """orjson.loads, also refusing duplicate keys (orjson.JSONDecodeError naming the key).

    Cheap for the usual body: when the parsed objects hold as many keys as the text has
    `"<ws>:` sequences, no key can have been repeated. Only otherwise (a string value holding
    `":`, or a real duplicate) is the text parsed again, by the json module, to tell."""
    data = orjson.loads(body)
    kind = type(data)
    if kind is dict:
        keys = len(data)
        for value in data.values():
            if type(value) in _CONTAINERS:
                keys = _key_count(data)
                break
    elif kind is list:
        keys = _key_count(data)
    else:
        return data
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(_KEY_END.findall(raw)) == keys:
        return data
    text = raw.decode("utf-8")  # valid: orjson accepted it
    try:
        json.loads(text, object_pairs_hook=_refuse_duplicates)
    except ValueError as exc:
        raise DuplicateKeyError(f"duplicate key {exc.args[0]!r}", text, 0) from None
    return data


def is_json_media_type(value: str) -> bool:
    """application/json or application/<anything>+json, parameters (charset) ignored."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def refuse_non_json(scope: Scope) -> None:
    """InvalidInputError (422; 400 on V2) for a state-changing request whose Content-Type is
    not JSON, whatever its body (an empty form post included); none at all is fine."""
    if scope.get("method") not in STATE_CHANGING:
        return
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            text = value.decode("latin-1")
            if not is_json_media_type(text):
                raise InvalidInputError(
                    f"body: Content-Type '{text.strip():.60}' is not JSON: send JSON with "
                    "Content-Type: application/json"
                )
            return


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError subclasses json.JSONDecodeError: FastAPI answers it with
            # its json_invalid validation error (422 in the error shape).
            self._json = loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """An APIRoute whose handler reads the body with orjson and refuses state-changing requests
    declared as anything but JSON (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            refuse_non_json(request.scope)
            return await handler(JSONRequest(request.scope, request.receive))

        return orjson_handler
