"""`mlserve serve`: start the inference server over a registry, or over model files."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mlserve.cli._common import ConfigOpt, cli_errors, err_console, load_cli_settings

log = logging.getLogger("mlserve.serve")

# Like _common.RegistryOpt, but without click's file_okay=False: a file given as the registry
# must end in serve's own one-line "is not a directory" error (exit 2), not a usage box.
ServeRegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry directory. Default: registry.path setting, else $MLSERVE_HOME/registry.",
        show_default=False,
    ),
]


def bootstrap_sample(settings: Any) -> None:
    """First run on an empty registry: train and register the bundled sentiment model."""
    from mlserve.cli._common import open_registry
    from mlserve.training import train_and_register

    log.info(
        "registry %s is empty: training the bundled sentiment sample as sentiment@production",
        settings.registry_path,
    )
    trained = train_and_register(
        open_registry(settings), sample="sentiment", name="sentiment", aliases=["production"]
    )
    result, meta = trained.result, trained.metadata
    assert meta is not None  # noqa: S101 - registered: a registry was given
    log.info(
        "registered %s:%s (hold-out accuracy %.3f, macro-F1 %.3f)",
        meta.name,
        meta.version,
        result.metrics["accuracy"],
        result.metrics["macro_f1"],
    )


@cli_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1).", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 8000).", show_default=False)
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Server processes on one socket (default 1). On Linux they are forked after "
            "the models are read, so they share the models' memory.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Serve only this model reference (name, name:3, name@staging); repeatable.",
            show_default=False,
        ),
    ] = None,
    model_path: Annotated[
        list[str] | None,
        typer.Option(
            "--model-path",
            help="Serve this model file (.joblib, .pkl, .skops, .onnx) or MLflow model "
            "directory, without a registry; NAME=PATH names it (default: the file's stem). "
            "Repeatable: --model-path iris=/models/iris.joblib --model-path /models/spam.onnx",
            show_default=False,
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            metavar="TYPE",
            help="A type a --model-path .skops file may hold beyond scikit-learn's and numpy's "
            "(repeatable; the refusal names them), as with register. Trusting a type runs its "
            "code when the model loads.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The name to serve the one --model-path under (several files: NAME=PATH each).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning or error.", show_default=False),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help="text, or json (one object per line).", show_default=False),
    ] = None,
    no_sample: Annotated[
        bool,
        typer.Option(
            "--no-sample",
            help="Do not train the bundled sentiment model when the registry is empty.",
        ),
    ] = False,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve on a non-loopback address although no API key or JWT is configured.",
        ),
    ] = False,
    root_path: Annotated[
        str,
        typer.Option(
            "--root-path",
            help="Path prefix the server is reached under, which the proxy in front strips "
            "(/mlserve: /mlserve/docs reaches /docs); the docs and OpenAPI links carry it.",
        ),
    ] = "",
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies whose X-Forwarded-For/-Proto give the client's address and scheme: "
            "comma-separated IPs or networks, or '*'. Default: $FORWARDED_ALLOW_IPS, else "
            "127.0.0.1.",
            show_default=False,
        ),
    ] = None,
    registry: ServeRegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the inference server (FastAPI on uvicorn) over the registry's models.

    On an empty registry it first trains and registers the bundled sentiment model.

    With --model-path it serves those files instead, without a registry (none is
    read or created): each is read and smoke-checked as at register, and served as
    version 1 with the alias production; alias changes answer 409.

    Stop it with Ctrl-C or SIGTERM: in-flight requests finish first.

    With --workers N on Linux: SIGHUP replaces the workers one at a time (the
    new ones re-read the registry), SIGTTIN adds a worker, SIGTTOU stops the
    newest.

    Exit codes: 0 stopped cleanly, 1 the workers cannot start, 2 configuration
    error (including a port already in use).
    """
    # One OpenMP thread per model call. Requests already run concurrently (a predict thread
    # per model beside the event loop); OpenMP's spinning workers on top of that made the
    # p99 of a HistGradientBoosting model ~30x worse on 2 cores (bench/RESULTS.md). Set before
    # scikit-learn loads its OpenMP runtime; an OMP_NUM_THREADS from the environment wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if name is not None:
        model_path = [name_model_path(name, model_path or [])]
    root_path = check_root_path(root_path)
    overrides: dict[str, Any] = {
        "registry": {"path": str(registry) if registry else None},
        "server": {
            "host": host,
            "port": port,
            "workers": workers,
            "models": model or None,
            "model_paths": model_path or None,
            "trusted_types": trust or None,
            "allow_unauthenticated": allow_unauthenticated or None,
        },
        "logging": {"level": log_level, "format": log_format},
    }
    settings = load_cli_settings(config, **overrides)
    if settings.server.model_paths and registry is not None:
        from mlserve.errors import UsageError

        raise UsageError("--registry and --model-path exclude each other: serve one or the other")
    if settings.server.trusted_types and not settings.server.model_paths:
        from mlserve.errors import UsageError

        raise UsageError(
            "--trust (server.trusted_types) is for --model-path files: a registry's versions "
            "load with the types trusted when they were registered (register --trust)"
        )
    check_exposure(settings)
    check_redis(settings)
    from mlserve.server.run import bind_socket, run

    sock = bind_socket(settings)  # a port in use: one line and exit 2, before anything else
    try:
        # Bound, not listening: a file that cannot serve ends here, before any connection.
        serving = check_model_files(settings) if settings.server.model_paths else None
    except BaseException:
        sock.close()
        raise
    if serving is None:
        serving = f"registry {settings.registry_path}"
        from mlserve.cli._common import open_registry

        reg = open_registry(settings)
        if not settings.server.models and not reg.names():
            if no_sample:
                log.warning("registry %s is empty; nothing to serve", settings.registry_path)
            else:
                bootstrap_sample(settings)

    base = f"http://{_display_host(settings.server.host)}:{settings.server.port}"
    links = {"docs": f"{base}/docs", "metrics": f"{base}/metrics", "health": f"{base}/api/health"}
    if settings.logging.format == "json":
        # Every line on stderr is then one JSON object, the banner too: a log shipper parses
        # each line, and a line of plain text would be an error (or dropped) there.
        log.info("mlserve serving %s on %s", serving, base, extra={"url": base, **links})
    else:
        err_console.print(
            f"mlserve serving {serving} on {base}\n"
            f"  docs    {base}/docs\n  metrics {base}/metrics\n  health  {base}/api/health"
        )
    with sock:  # closed once the server has stopped (uvicorn closes what it listened on)
        run(
            settings,
            config_path=str(config) if config else None,
            overrides=_json_safe(overrides),
            sock=sock,
            root_path=root_path,
            forwarded_allow_ips=forwarded_allow_ips,
        )


def check_model_files(settings: Any) -> str:
    """Read, describe and smoke-check every file of server.model_paths as `register` would
    (the server reads them again in its lifespan); the first that cannot serve raises its
    one-line error (exit 2). Returns what the banner says is served."""
    from mlserve.registry import FileModels

    files = FileModels.from_settings(settings)
    served = [f"{meta.name} ({files.path_of(meta.name)})" for meta in files.check()]
    return "model files " + ", ".join(served)


def check_exposure(settings: Any) -> None:
    """Refuse to serve beyond loopback with auth off, unless explicitly allowed (then warn).
    Also validates the auth settings (key file, JWT) before anything binds."""
    from mlserve.errors import ConfigError
    from mlserve.keys.auth import auth_configured

    host = settings.server.host
    if auth_configured(settings) or is_loopback(host):
        return
    if not settings.server.allow_unauthenticated:
        raise ConfigError(
            f"refusing to serve on {host or 'every interface'} without authentication: create "
            "a key with `mlserve keys create --role predict` (or set auth.keys or a JWT key), "
            "bind 127.0.0.1, or pass --allow-unauthenticated"
        )
    log.warning(
        "serving on %s WITHOUT authentication (--allow-unauthenticated): anyone who can reach "
        "this address can call every endpoint, admin ones included",
        host,
    )


def check_redis(settings: Any) -> None:
    """With redis.url set, the mlserve-sklearn[redis] extra must be installed (ConfigError, exit 2).
    An unreachable Redis is not an error: the server starts, degraded, and recovers."""
    if settings.redis.url is None:
        return
    from mlserve.backends.redis import require_redis

    require_redis(celery=True)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost, or "" (every interface)


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - compared, not bound: shown as the local URL
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _json_safe(overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {kk: (str(vv) if isinstance(vv, Path) else vv) for kk, vv in v.items()}
        for k, v in overrides.items()
    }


def check_root_path(root_path: str) -> str:
    """--root-path as uvicorn wants it: "" or "/prefix" (no trailing slash); else UsageError."""
    from mlserve.errors import UsageError

    value = root_path.rstrip("/")
    if value and (not value.startswith("/") or any(c in value for c in "?# ")):
        raise UsageError(
            f"--root-path {root_path!r}: give a path prefix such as /mlserve (starting with /)"
        )
    return value


def name_model_path(name: str, paths: list[str]) -> str:
    """`--name N` with one `--model-path PATH`: the entry N=PATH."""
    from mlserve.errors import UsageError

    if len(paths) != 1:
        raise UsageError(
            "--name names the one --model-path; with several files, name each as "
            "--model-path NAME=PATH"
        )
    return f"{name}={paths[0]}"
