"""Options shared by the commands that talk to a running server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from mlserve.client import Client

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Server URL (default: client.url setting, http://127.0.0.1:8000).",
        show_default=False,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MLSERVE_API_KEY",
        help="API key sent as a bearer token (or $MLSERVE_API_KEY).",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout", help="Seconds to wait for each response (default 10).", show_default=False
    ),
]


def client_settings(
    config: Any, url: str | None, api_key: str | None, timeout: float | None, **extra: Any
) -> Any:
    """Settings with the client flags applied (and any other sections of flags in `extra`)."""
    from mlserve.cli._common import load_cli_settings
    from mlserve.errors import UsageError

    settings = load_cli_settings(
        config, client={"url": url, "api_key": api_key, "timeout": timeout}, **extra
    )
    target = settings.client.url
    if not target.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https:// (got '{target}')")
    import httpx

    try:
        host = httpx.URL(target).host
    except httpx.InvalidURL as exc:
        raise UsageError(f"--url '{target}' is not a valid URL: {exc}") from None
    if not host:
        raise UsageError(f"--url '{target}' names no host (e.g. http://127.0.0.1:8000)")
    if settings.client.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return settings


def make_client(settings: Any) -> Client:
    from mlserve.client import Client

    key = settings.client.api_key.get_secret_value() if settings.client.api_key else None
    return Client(settings.client.url, api_key=key, timeout=settings.client.timeout)
