"""What the HTTP layer reads from and notes in an ASGI request scope."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from mlserve.serving.manager import Runtime

__all__ = ["client_key", "mark_model", "request_id", "route_path"]


def client_key(scope: Scope) -> str:
    """Who a request is for: X-Client-ID, else the authenticated principal, else the address."""
    for key, value in scope.get("headers", ()):
        if key == b"x-client-id":
            text = value.decode("latin-1").strip()
            if text:
                return f"id:{text}"
            break
    principal = scope.get("state", {}).get("principal")
    ident = getattr(principal, "id", None) or getattr(principal, "name", None)
    if ident:
        return f"principal:{ident}"
    client = scope.get("client")
    return f"addr:{client[0]}" if client else ""


def mark_model(scope: Scope, runtime: Runtime) -> None:
    """Note the model and version that answer, for the request metrics and the access log."""
    state = scope.setdefault("state", {})
    state["model"] = runtime.model.name
    state["version"] = runtime.model.version


def request_id(scope: Scope) -> str | None:
    """The request id the request middleware assigned (None outside it)."""
    value = scope.get("state", {}).get("request_id")
    return None if value is None else str(value)


def route_path(scope: Scope) -> str:
    """The path the router matches (scope["path"] minus any root_path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path
