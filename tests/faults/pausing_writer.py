"""A child process for the kill tests: run `mlserve ARGS...` in-process with every write the
registry makes (mkdir, fsync, rename, replace, unlink, rmdir) counted; the write numbered
MLSERVE_TEST_PAUSE_AT is not made: the process names it in MLSERVE_TEST_PAUSE_FILE and waits to
be killed. Without MLSERVE_TEST_PAUSE_AT, every write is listed in that file and the command
runs to its end (how a test learns how many steps there are).

Only this test helper patches: the registry code has no test hooks."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

WRITES = ("mkdir", "fsync", "rename", "replace", "unlink", "rmdir")


def main() -> None:
    from mlserve.cli import app

    root = os.path.realpath(os.environ["MLSERVE_TEST_REGISTRY"])
    pause_at = int(os.environ.get("MLSERVE_TEST_PAUSE_AT", "-1"))
    report = Path(os.environ["MLSERVE_TEST_PAUSE_FILE"])
    steps: list[str] = []

    def inside(arg: Any) -> str | None:
        if isinstance(arg, int):  # an fd: fsync
            try:
                arg = os.readlink(f"/proc/self/fd/{arg}")
            except OSError:
                return None
        path = os.path.realpath(os.fspath(arg))
        return os.path.relpath(path, root) if path.startswith(root + os.sep) else None

    def hooked(op: str, real: Any) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            where = inside(args[0]) if args else None
            if where is not None:
                step = f"{len(steps)} {op} {where}"
                steps.append(step)
                if len(steps) - 1 == pause_at:
                    report.write_text(step)
                    signal.pause()  # killed here by the test, before this write happens
            return real(*args, **kwargs)

        return write

    for op in WRITES:
        setattr(os, op, hooked(op, getattr(os, op)))
    try:
        app(sys.argv[1:], standalone_mode=False)
    finally:
        if pause_at < 0:
            report.write_text("\n".join(steps))


if __name__ == "__main__":
    main()
