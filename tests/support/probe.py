"""Which modules a CLI invocation imports, seen from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence

# What `mlserve --help` must not import (slow to import, and not needed to parse flags).
HEAVY = ("sklearn", "fastapi", "scipy", "uvicorn")

IMPORT_PROBE = textwrap.dedent(
    """
    import sys
    WATCHED = sys.argv[1].split(",")
    sys.argv = ["mlserve", *sys.argv[2:]]
    import mlserve.cli
    code = 0
    if len(sys.argv) > 1:
        try:
            mlserve.cli.main()
        except SystemExit as exc:
            code = exc.code or 0
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))
    print("LOADED=" + ",".join(loaded))
    print("CODE=" + str(code))
    """
)


def imported(watched: Sequence[str], *args: str) -> tuple[str, str]:
    """Run `mlserve ARGS...` (or only import the CLI, without args) in a fresh interpreter;
    return (the `watched` top-level modules it imported, comma-separated; its exit code)."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, ",".join(watched), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert "LOADED" in lines, proc.stderr
    return lines["LOADED"], lines["CODE"]
