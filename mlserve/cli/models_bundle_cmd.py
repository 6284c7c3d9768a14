"""`mlserve models export | import`: move a version between registries as a portable bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli._common import (
    ConfigOpt,
    JsonOpt,
    RegistryOpt,
    cli_errors,
    console,
    load_cli_settings,
    open_registry,
    print_json,
)

__all__ = ["export_version", "import_version"]


@cli_errors
def export_version(
    ref: Annotated[
        str,
        typer.Argument(
            help="Model reference: name (its production alias, else the latest version), "
            "name:VERSION or name@ALIAS."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Bundle file to write (a directory: NAME-VERSION.tar.gz in it). "
            "Default: ./NAME-VERSION.tar.gz.",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a version as a portable bundle (tar.gz) to import into another registry.

    The bundle holds the artifact and the version's metadata: sha256, metrics, the training
    profile drift is measured against, and the typed input signature. The file is written
    atomically (never half-written).
    """
    from mlserve.registry.bundle import export_bundle

    reg = open_registry(load_cli_settings(config, registry={"path": registry}))
    meta, written = export_bundle(reg, ref, output if output is not None else Path.cwd())
    size = written.stat().st_size
    if as_json:
        print_json(
            {
                "name": meta.name,
                "version": meta.version,
                "sha256": meta.sha256,
                "path": str(written),
                "size_bytes": size,
            }
        )
        return
    console.print(f"exported {meta.name}:{meta.version} to {written} ({size:,} bytes)")


@cli_errors
def import_version(
    path: Annotated[
        Path,
        typer.Argument(help="Bundle file written by `mlserve models export`.", dir_okay=False),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="Register it under this name. Default: the exported model's name.",
            show_default=False,
        ),
    ] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", "-a", help="Point this alias at the new version (repeatable)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Predict a row built from the signature before registering, and refuse a "
            "model that cannot. --no-check: for a model that cannot run here.",
        ),
    ] = True,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a bundle as the next version of a model in this registry.

    The artifact must match the sha256 and size recorded in the bundle: a changed or damaged
    bundle is refused (exit 2) and nothing is written. Metrics, the training profile (drift
    baseline), signature, tags and description are kept. The sha256 detects damage, it is not
    a signature, and loading a joblib model runs code from it: import only bundles you trust.
    """
    from mlserve.cli.register_cmd import check_note, render_registered
    from mlserve.registry.bundle import import_bundle

    reg = open_registry(load_cli_settings(config, registry={"path": registry}))
    meta = import_bundle(reg, path, name=name, aliases=alias or [], check=check)
    if as_json:
        print_json(meta.model_dump(mode="json"))
        return
    render_registered(meta, verb="imported")
    console.print(f"source {meta.source}")
    check_note(check)
