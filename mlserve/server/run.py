"""Run the app on uvicorn: one process, or N workers sharing one socket (forked on Linux)."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from mlserve.config import Settings, load_settings
from mlserve.errors import ConfigError
from mlserve.server.prefork import can_fork, exit_cleanly, serve_forked
from mlserve.server.protocol import HeaderLimits, ServerConfig

log = logging.getLogger(__name__)

WORKER_ENV = "_MLSERVE_WORKER_SETTINGS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_app() -> Any:
    """App factory for spawned worker processes (where there is no fork: see run): rebuilds
    the parent's settings from the environment."""
    from mlserve.logs import setup_logging
    from mlserve.server.app import create_app

    data = json.loads(os.environ[WORKER_ENV])
    settings = load_settings(data["config"], **data["overrides"])
    setup_logging(level=settings.logging.level, fmt=settings.logging.format)
    # Load before serving: a worker only starts accepting on the shared socket once its models
    # are loaded, so a request never lands on a worker that would answer 503 while its
    # siblings are ready.
    return create_app(settings, background_load=False, freeze_heap=True)


def uvicorn_options(
    settings: Settings, *, root_path: str = "", forwarded_allow_ips: str | None = None
) -> dict[str, Any]:
    """uvicorn's options for `settings`. root_path: the prefix a proxy strips before passing
    requests on (`serve --root-path`); forwarded_allow_ips: the proxies whose X-Forwarded-For
    and X-Forwarded-Proto are believed (`serve --forwarded-allow-ips`; None: uvicorn reads
    $FORWARDED_ALLOW_IPS, else trusts 127.0.0.1 only)."""
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "root_path": root_path,
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips,
        "log_config": None,  # our handlers (mlserve.logs) are already installed
        "access_log": False,  # the request middleware writes the access log
        "timeout_keep_alive": int(settings.server.timeout_keep_alive),
        "timeout_graceful_shutdown": int(settings.server.graceful_timeout),
        "server_header": False,
        "loop": settings.server.loop,
        "limit_concurrency": settings.server.limit_concurrency or None,  # 0: no cap
        "backlog": settings.server.backlog,
        "header_limits": HeaderLimits(
            max_line_bytes=settings.server.max_header_line_bytes,
            max_total_bytes=settings.server.max_header_bytes,
            max_count=settings.server.max_headers,
        ),
    }


def _clean_metrics_dir(folder: Path) -> None:
    """A folder given in PROMETHEUS_MULTIPROC_DIR may hold a previous run's files, whose counts
    would be added to this run's: remove them (the folder must be this server's alone)."""
    stale = list(folder.glob("*.db")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d stale metrics files from %s", len(stale), folder)
    folder.mkdir(parents=True, exist_ok=True)


def bind_socket(settings: Settings) -> socket.socket:
    """The server's socket, bound (not yet listening) to server.host:server.port; a port in
    use or an address this host does not have is a ConfigError (exit 2), before anything is
    printed or loaded."""
    host, port = settings.server.host, settings.server.port
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # accepted connections inherit it (else every answer written in two parts waits ~40 ms
    # on Nagle and the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As uvicorn binds: a restarted server may reuse a port whose old connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        raise ConfigError(
            f"cannot listen on {host or 'every interface'} port {port}: {reason} "
            "(choose another with --port or server.port)"
        ) from None
    sock.set_inheritable(True)  # --workers: the worker processes accept on it too
    return sock


def run(
    settings: Settings,
    *,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    sock: socket.socket | None = None,
    root_path: str = "",
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT on `sock` (bound here when not given); returns after a
    graceful shutdown. With server.workers > 1, on Linux, this process imports the app and
    reads the models once and forks the workers (mlserve.server.prefork); elsewhere uvicorn's
    supervisor spawns them, each importing and loading on its own. root_path and
    forwarded_allow_ips: see uvicorn_options."""
    if settings.server.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(
            "server.loop = 'uvloop' needs the uvloop package (pip install uvloop), "
            "or leave server.loop at 'asyncio'"
        )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, exit_cleanly)
    sock = sock or bind_socket(settings)
    options = uvicorn_options(
        settings, root_path=root_path, forwarded_allow_ips=forwarded_allow_ips
    )
    workers = settings.server.workers
    if workers <= 1:
        from mlserve.server.app import create_app

        app = create_app(settings, background_load=True, freeze_heap=True)
        uvicorn.Server(ServerConfig(app, **options)).run(sockets=[sock])
        return
    # /metrics must count every worker's requests, not the one that answers the scrape:
    # prometheus_client's multiprocess mode, in a folder made for this run.
    metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="mlserve-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    else:
        _clean_metrics_dir(Path(os.environ[MULTIPROC_ENV]))
    try:
        if can_fork():
            serve_forked(settings, options, sock)
            return
        os.environ[WORKER_ENV] = json.dumps({"config": config_path, "overrides": overrides or {}})
        config = ServerConfig(
            "mlserve.server.run:worker_app",
            factory=True,
            workers=workers,
            **options,
        )
        uvicorn.supervisors.Multiprocess(config, sockets=[sock]).run()
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
