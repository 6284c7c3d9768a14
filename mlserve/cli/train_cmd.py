"""`mlserve train`: fit a model on a CSV or a bundled sample, evaluate it, register it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlserve.cli._common import (
    ConfigOpt,
    JsonOpt,
    RegistryOpt,
    cli_errors,
    console,
    err_console,
    load_cli_settings,
    open_registry,
    print_json,
)
from mlserve.cli.register_cmd import TaskOpt, check_task, parse_tags, render_registered


def train_and_register(
    settings: Any,
    *,
    sample: str | None = None,
    data: Path | None = None,
    target: str | None = None,
    text_column: str | None = None,
    drop: list[str] | None = None,
    name: str | None = None,
    aliases: list[str] | None = None,
    test_size: float = 0.2,
    seed: int = 42,
    task: Any = None,
    register: bool = True,
    output: Path | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    quiet: bool = False,
) -> tuple[Any, Any]:
    """Train per the options with a progress spinner; returns (TrainResult, ModelMetadata |
    None)."""
    from mlserve import training

    status = err_console.status("loading data", spinner="dots") if not quiet else None
    if status is not None:
        status.start()
    try:
        outcome = training.train_and_register(
            open_registry(settings) if register else None,
            sample=sample,
            data=data,
            target=target,
            text_column=text_column,
            drop=drop or [],
            name=name,
            aliases=aliases,
            test_size=test_size,
            seed=seed,
            task=task,
            output=output,
            description=description,
            tags=tags,
            progress=status.update if status is not None else None,
        )
    finally:
        if status is not None:
            status.stop()
    if outcome.dropped_rows and not quiet:
        err_console.print(f"skipped {outcome.dropped_rows} row(s) with an empty target or text")
    return outcome.result, outcome.metadata


def render_metrics(result: Any) -> None:
    from rich.table import Table

    m = result.metrics
    table = Table(
        title=f"hold-out evaluation ({result.n_test} of {result.n_train + result.n_test} rows)",
        title_justify="left",
    )
    if result.task == "tabular-regression":
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in ("r2", "mae", "rmse"):
            table.add_row(key, f"{m[key]:.4f}")
        console.print(table)
        return
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, row in m["per_class"].items():
        table.add_row(
            label,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    table.add_section()
    table.add_row("accuracy", "", "", f"{m['accuracy']:.3f}", str(result.n_test))
    table.add_row("macro F1", "", "", f"{m['macro_f1']:.3f}", "")
    console.print(table)


@cli_errors
def train(
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample", help="Bundled data: sentiment (text) or iris (tabular).", show_default=False
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="CSV file with a header row.", dir_okay=False, show_default=False
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Column to predict.", show_default=False)
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="Column of free text, through TF-IDF: alone, a text classifier; with other "
            "columns, one feature of a table model. Without it, every other column is a feature.",
            show_default=False,
        ),
    ] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option(
            "--drop",
            help="Leave this column out of the features (leaks, identifiers; repeatable).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Registry name. Default: the sample or file name."),
    ] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", "-a", help="Point this alias at the new version (repeatable)."),
    ] = None,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Share of rows held out for evaluation.")
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for split and model.")] = 42,
    task: TaskOpt = None,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Evaluate only; do not add to the registry.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Also write the model to this joblib file.", dir_okay=False
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="Free-text description.")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE label (repeatable).")
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a model, evaluate it on a stratified hold-out split and register it with its metrics.

    Text data trains TF-IDF + logistic regression; numeric columns train gradient-boosted trees
    (classification, or regression for a numeric target with many distinct values). A table with
    string or boolean columns (or a text column among others) trains a ColumnTransformer pipeline
    on a pandas DataFrame (the pandas extra): imputed, one-hot encoded, TF-IDF for the text.
    """
    settings = load_cli_settings(config, registry={"path": registry})
    result, meta = train_and_register(
        settings,
        sample=sample,
        data=data,
        target=target,
        text_column=text_column,
        drop=drop,
        name=name,
        aliases=alias,
        test_size=test_size,
        seed=seed,
        task=check_task(task),
        register=not no_register,
        output=output,
        description=description,
        tags=parse_tags(tag or []),
        quiet=as_json,
    )
    if as_json:
        print_json(
            {
                "task": result.task,
                "metrics": result.metrics,
                "registered": meta.model_dump(mode="json") if meta is not None else None,
                "output": str(output) if output else None,
            }
        )
        return
    render_metrics(result)
    if meta is not None:
        render_registered(meta, verb="trained and registered")
    if output is not None:
        console.print(f"wrote {output}")
