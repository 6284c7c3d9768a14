"""`mlserve worker`: a Celery worker scoring async jobs from Redis (scale-out deployments)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from mlserve.cli._common import ConfigOpt, RegistryOpt, cli_errors, load_cli_settings

log = logging.getLogger("mlserve.worker")


@cli_errors
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-n",
            min=1,
            max=64,
            help="Jobs worked on at once (threads sharing one copy of the models).",
        ),
    ] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus /metrics on this port (worker.metrics_port; 0: off, "
            "the default).",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(help="Address the /metrics port binds (0.0.0.0 in a container)."),
    ] = "127.0.0.1",
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning or error.", show_default=False),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help="text, or json (one object per line).", show_default=False),
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score async jobs queued in Redis, with the registry's models (needs redis.url).

    Any number of workers, on any host that sees the registry and Redis, share the queue.
    Stop it with SIGTERM or Ctrl-C: a job in progress is given back after its current chunk
    and picked up by another worker; a worker that is killed loses nothing either.

    With --metrics-port, Prometheus scrapes the worker's job metrics there (jobs finished,
    rows scored, chunk durations, jobs running).
    """
    overrides: dict[str, Any] = {
        "registry": {"path": str(registry) if registry else None},
        "logging": {"level": log_level, "format": log_format},
        "worker": {"metrics_port": metrics_port},
    }
    settings = load_cli_settings(config, **overrides)
    from mlserve.errors import ConfigError

    if settings.redis.url is None:
        raise ConfigError(
            "mlserve worker needs Redis: set redis.url in the config file or "
            "MLSERVE_REDIS__URL (e.g. redis://127.0.0.1:6379/0), the same as the servers'"
        )
    from mlserve.backends.redis import require_redis

    require_redis(celery=True)
    from mlserve.cli._common import open_registry

    reg = open_registry(settings)
    if not reg.names():
        log.warning(
            "registry %s has no models yet; jobs need the models they were submitted for",
            settings.registry_path,
        )
    from mlserve.worker.app import run_worker

    code = run_worker(settings, concurrency=concurrency, metrics_host=metrics_host)
    if code:
        raise typer.Exit(code)
