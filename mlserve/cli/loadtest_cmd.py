"""`mlserve loadtest`: placeholder until the load generator lands."""

from __future__ import annotations

import typer


def loadtest() -> None:
    """Measure a running server (not implemented yet)."""
    raise typer.Exit(1)
