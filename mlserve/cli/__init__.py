"""The `mlserve` command line: one module per command, heavy imports inside command bodies."""

from __future__ import annotations

from typing import Annotated

import typer

from mlserve import __version__
from mlserve.cli import (
    config_cmd,
    feedback_cmd,
    health_cmd,
    keys_cmd,
    loadtest_cmd,
    models_bundle_cmd,
    models_cmd,
    predict_cmd,
    register_cmd,
    rollout_cmd,
    serve_cmd,
    train_cmd,
    worker_cmd,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="mlserve",
    help="Train, register and serve scikit-learn models over HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlserve {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train, register and serve scikit-learn models over HTTP."""
    ctx.obj = {"verbose": verbose}


app.command("train")(train_cmd.train)
app.command("register")(register_cmd.register)
app.command("serve")(serve_cmd.serve)
app.command("predict")(predict_cmd.predict)
app.command("health-check")(health_cmd.health_check)
app.command("feedback")(feedback_cmd.feedback)
app.command("loadtest")(loadtest_cmd.loadtest)
app.command("worker")(worker_cmd.worker)
models_cmd.app.command("export")(models_bundle_cmd.export_version)
models_cmd.app.command("import")(models_bundle_cmd.import_version)
app.add_typer(models_cmd.app, name="models")
app.add_typer(config_cmd.app, name="config")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(rollout_cmd.app, name="rollout")


def main() -> None:
    app()
