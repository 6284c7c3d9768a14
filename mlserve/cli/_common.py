"""Shared CLI plumbing: consoles, common options, settings at the edge, error translation."""

from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import os
import signal
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

# How a shell reports a process killed by SIGPIPE (`mlserve predict ... | head`): 141.
BROKEN_PIPE_EXIT = 128 + getattr(signal, "SIGPIPE", 13)


class PipeConsole(Console):
    """A rich console that lets a closed pipe reach `cli_errors` (rich's own handling exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write where nobody reads
        raise BrokenPipeError("the reader of the output went away")


console = PipeConsole(highlight=False, soft_wrap=True)
err_console = PipeConsole(stderr=True, highlight=False, soft_wrap=True)

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
    """Turn expected errors into a one-line message and an exit code; --verbose adds tracebacks.
    A closed output (`mlserve predict ... | head`) exits 141, silently, as Unix tools do."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _buffer_raw_stdout()
        try:
            return _translated(fn, *args, **kwargs)
        except BrokenPipeError as exc:  # writing the output, or the error message
            if output_closed():
                # The reader went away: exit quietly, as tools killed by SIGPIPE do.
                raise broken_pipe_exit() from None
            raise _internal_error(exc) from None  # another pipe broke: a failure to report

    return wrapper


def _buffer_raw_stdout() -> None:
    """With PYTHONUNBUFFERED (deploy/Dockerfile sets it) stdout writes straight to its file
    descriptor, and when a closing pipe cuts a large write short CPython drops the rest
    silently (exit 0, output lost). A buffered writer over the same descriptor, flushed at
    each line as unbuffered output would be, writes everything or raises BrokenPipeError."""
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or not isinstance(out.buffer, io.RawIOBase):
        return  # buffered already, or not a file (a test runner's capture)
    raw = io.FileIO(out.fileno(), "w", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=out.encoding,
        errors=out.errors,
        line_buffering=True,
        write_through=True,
    )


def _translated(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        try:
            return fn(*args, **kwargs)
        finally:
            # Output still buffered fails here, where it is handled, not at interpreter exit.
            if sys.stdout is not None:
                sys.stdout.flush()
    except MlserveError as exc:
        if is_verbose():
            err_console.print_exception()
        raise fail(_escape(exc.message), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except (typer.Exit, typer.Abort, BrokenPipeError, _click("ClickException")):
        raise
    except Exception as exc:
        raise _internal_error(exc) from None


def _internal_error(exc: Exception) -> typer.Exit:
    """An unexpected failure is a bug: one line by default, the traceback with --verbose."""
    logging.getLogger("mlserve").debug("unexpected error", exc_info=exc)
    what = f"internal error: {type(exc).__name__}: {_escape(str(exc))}"
    if is_verbose():
        err_console.print_exception()  # called while `exc` is being handled
        return fail(what)
    return fail(f"{what} (run with --verbose for the traceback)")


def _output_fds() -> list[int]:
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.append(stream.fileno())
        except (AttributeError, OSError, ValueError):
            continue  # not a file descriptor (a test runner's capture)
    return fds


def output_closed() -> bool:
    """Whether stdout or stderr is a pipe or socket whose reader went away (POLLERR/POLLHUP);
    True when that cannot be told (no poll(), no descriptors): it is the usual cause."""
    import select

    fds = _output_fds()
    if not fds or not hasattr(select, "poll"):
        return True
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def broken_pipe_exit() -> typer.Exit:
    """Exit 141 with no message; stdout and stderr now point at /dev/null, so the interpreter's
    last flush has nowhere to fail ("Exception ignored ... BrokenPipeError"): the recipe of the
    Python docs' note on SIGPIPE (Python ignores the signal, so writes raise instead)."""
    for fd in _output_fds():
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    return typer.Exit(BROKEN_PIPE_EXIT)


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
