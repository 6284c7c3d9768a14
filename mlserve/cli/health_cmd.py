"""`mlserve health-check`: an exit code for scripts, containers and CI."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt, client_settings
from mlserve.cli._common import ConfigOpt, cli_errors, console, err_console, print_json

POLL_INTERVAL_S = 0.5
# The probe at the --wait deadline still gets this long to answer: --wait overruns by at most it.
MIN_PROBE_TIMEOUT_S = 0.5


def check_once(client: Any, mode: str) -> dict[str, Any]:
    """One probe; returns {"healthy": bool, "status": str, "models": [...], "error"?: str}."""
    from mlserve.errors import MlserveError, ServerUnreachableError

    try:
        if mode == "live":
            alive = client.live()
            return {"healthy": alive, "status": "live" if alive else "not live", "models": []}
        if mode == "ready":
            ready, body = client.ready()
            models = [
                {"name": name, "status": status}
                for name, status in sorted((body.models if body else {}).items())
            ]
            return {"healthy": ready, "status": "ready" if ready else "not ready", "models": models}
        health = client.health()
        return {
            "healthy": health.status == "healthy",
            "status": health.status,
            "models": [m.model_dump(mode="json") for m in health.models],
        }
    except ServerUnreachableError as exc:
        return {"healthy": False, "status": "unreachable", "models": [], "error": exc.message}
    except MlserveError as exc:  # it answered, with an error (401, 500, not an mlserve server)
        return {"healthy": False, "status": "error", "models": [], "error": exc.message}


@cli_errors
def health_check(
    live: Annotated[bool, typer.Option("--live", help="Only check the process answers.")] = False,
    ready: Annotated[
        bool, typer.Option("--ready", help="Check models are loaded (the default).")
    ] = False,
    deep: Annotated[
        bool, typer.Option("--deep", help="Run a smoke prediction per model (/api/health).")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Poll for up to this many seconds until healthy (each probe's --timeout is cut "
            "to the time left).",
            min=0,
        ),
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Exit 0 when the server is healthy, 1 when not, 2 on a usage or config error.

    Exit 1: unreachable, no answer within --timeout, not ready, or degraded.

    For container HEALTHCHECKs and CI: `mlserve health-check --wait 60` after starting a server.
    """
    import httpx

    from mlserve.client import Client
    from mlserve.errors import UsageError

    if sum([live, ready, deep]) > 1:
        raise UsageError("choose one of --live, --ready or --deep")
    mode = "live" if live else "deep" if deep else "ready"
    settings = client_settings(config, url, api_key, timeout)
    timeout_s = settings.client.timeout
    key = settings.client.api_key.get_secret_value() if settings.client.api_key else None
    deadline = time.monotonic() + wait
    # Our own httpx client, so each probe's timeout can be cut to what is left of --wait.
    with httpx.Client(base_url=settings.client.url, timeout=timeout_s) as http:
        client = Client(settings.client.url, api_key=key, http=http)
        while True:
            if wait > 0:
                left = max(deadline - time.monotonic(), MIN_PROBE_TIMEOUT_S)
                http.timeout = httpx.Timeout(min(timeout_s, left))
            result = check_once(client, mode)
            remaining = deadline - time.monotonic()
            if result["healthy"] or remaining <= 0:
                break
            # Polling a server that is starting, bounded by --wait; the last probe is at the
            # deadline, so a server ready just before it still counts.
            time.sleep(min(POLL_INTERVAL_S, remaining))
    result["url"] = settings.client.url
    result["check"] = mode
    if as_json and not quiet:
        print_json(result)
    elif not quiet:
        _render(result)
    raise typer.Exit(0 if result["healthy"] else 1)


def _render(result: dict[str, Any]) -> None:
    from rich.table import Table

    color = "green" if result["healthy"] else "red"
    console.print(f"[{color}]{result['status']}[/] {result['url']} ({result['check']} check)")
    if result.get("error"):
        err_console.print(result["error"])
    if result["models"]:
        table = Table(show_header=True)
        table.add_column("model")
        table.add_column("status")
        extra = result["check"] == "deep"
        if extra:
            table.add_column("version")
            table.add_column("latency ms", justify="right")
            table.add_column("error")
        for m in result["models"]:
            row = [m["name"], m["status"]]
            if extra:
                latency = m.get("latency_ms")
                row += [
                    str(m.get("version") or "-"),
                    f"{latency:.1f}" if latency is not None else "-",
                    m.get("error") or "",
                ]
            table.add_row(*row)
        console.print(table)
