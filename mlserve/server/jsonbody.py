"""JSON request bodies read by orjson on the /api routes, as the predict fast path reads them.

One parser for the fast path and the routes behind it, so a body is never accepted by one and
refused by the other. orjson is strict where Python's json module is lax: invalid UTF-8, lone
surrogates (\\ud800), NaN / Infinity tokens, numbers beyond a double and nesting past 1024 levels
are malformed JSON (422 invalid_input), never strings or numbers a route has to defend against.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError subclasses json.JSONDecodeError: FastAPI answers it with
            # its json_invalid validation error (422 in the error shape).
            self._json = orjson.loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """An APIRoute whose handler reads the body with orjson (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return orjson_handler
