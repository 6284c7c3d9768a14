"""Shared CLI plumbing: consoles, common options, settings at the edge, error translation."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from mlserve.errors import MlserveError

if TYPE_CHECKING:
    from mlserve.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file. Default: $MLSERVE_CONFIG, else ./mlserve.toml when present.",
        show_default=False,
        dir_okay=False,
    ),
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry directory. Default: registry.path setting, else $MLSERVE_HOME/registry.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]


def _click(name: str, *, submodule: str = "") -> Any:
    """An attribute of the click that typer runs on: recent typer vendors it as typer._click
    (the `click` package's context and exceptions are then never the ones in play)."""
    for package in ("typer._click", "click"):
        try:
            return getattr(importlib.import_module(package + submodule), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"no click providing {name}")  # pragma: no cover - typer needs one


def is_verbose() -> bool:
    ctx = _click("get_current_context", submodule=".globals")(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("verbose"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected errors into a one-line message and an exit code; --verbose adds tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MlserveError as exc:
            if is_verbose():
                err_console.print_exception()
            raise fail(_escape(exc.message), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort, _click("ClickException")):
            raise
        except Exception as exc:
            # An unexpected failure is a bug: one line by default, the traceback with --verbose.
            logging.getLogger("mlserve").debug("unexpected error", exc_info=True)
            if is_verbose():
                err_console.print_exception()
                raise fail(f"internal error: {type(exc).__name__}: {_escape(str(exc))}") from None
            raise fail(
                f"internal error: {type(exc).__name__}: {_escape(str(exc))} "
                "(run with --verbose for the traceback)"
            ) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def load_cli_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command: flags given as keyword sections override env and file."""
    from mlserve.config import load_settings

    settings = load_settings(config, **overrides)
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def open_registry(settings: Settings) -> Any:
    from mlserve.registry import Registry

    registry = Registry(settings.registry_path)
    registry.check_readable()
    return registry


def configure_logging(level: str, fmt: str) -> None:
    """Logs go to stderr; json format gives one object per line."""
    from mlserve.logs import setup_logging

    setup_logging(level=level, fmt=fmt, verbose=is_verbose())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()
