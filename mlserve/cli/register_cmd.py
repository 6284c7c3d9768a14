"""`mlserve register`: add an existing model (joblib, skops, ONNX, MLflow) to the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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

TASKS = (
    "text-classification",
    "tabular-classification",
    "tabular-regression",
    "tabular-multilabel",
    "anomaly-detection",
    "clustering",
)
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        help=f"What the model does: {', '.join(TASKS)} (detected from the estimator when "
        "left out).",
        show_default=False,
    ),
]


def parse_tags(tags: list[str]) -> dict[str, str]:
    from mlserve.errors import UsageError

    out = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid --tag '{tag}': use KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def read_metrics_file(path: Path) -> dict[str, Any]:
    from mlserve.errors import UsageError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"metrics file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read metrics file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"metrics file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f'metrics file {path} must hold a JSON object, e.g. {{"accuracy": 0.9}}')
    return data


def check_task(task: str | None) -> Any:
    from mlserve.errors import UsageError

    if task is not None and task not in TASKS:
        raise UsageError(f"invalid --task '{task}': choose one of {', '.join(TASKS)}")
    return task


def render_registered(meta: Any, *, verb: str = "registered") -> None:
    from rich.panel import Panel

    ref = f"{meta.name}:{meta.version}"
    lines = [
        f"[bold]{ref}[/]  {meta.task}  {meta.estimator}",
        f"sha256 {meta.sha256}",
        f"size {meta.size_bytes:,} bytes",
    ]
    if meta.format != "joblib":
        trusted = meta.format_details.get("trusted") or []
        also = f", trusting {', '.join(map(str, trusted))}" if trusted else ""
        lines.append(f"format {meta.format}{also}")
    if meta.classes:
        lines.append("classes " + ", ".join(map(str, meta.classes)))
    columns = meta.input_schema.columns or []
    if columns:
        shown = ", ".join(f"{c.name}: {c.dtype}{'?' if c.nullable else ''}" for c in columns[:12])
        more = f", … ({len(columns)} columns)" if len(columns) > 12 else ""
        lines.append(f"inputs {shown}{more}")
    console.print(Panel("\n".join(lines), title=verb, expand=False))
    for note in meta.input_schema.notes:
        console.print(f"[yellow]note:[/] {note}")


def check_note(check: bool) -> None:
    if not check:
        console.print(
            "[yellow]note:[/] --no-check: no smoke prediction was made; the model is "
            "registered without proof that it can predict on this host"
        )


@cli_errors
def register(
    path: Annotated[
        Path,
        typer.Argument(
            help="The model: a joblib/pickle file, a .skops file, an .onnx file, or an MLflow "
            "model directory."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name in the registry.")],
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", "-a", help="Point this alias at the new version (repeatable)."),
    ] = None,
    description: Annotated[str, typer.Option(help="Free-text description.")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE label (repeatable).")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(
            "--metrics", help="JSON file of evaluation metrics to record.", dir_okay=False
        ),
    ] = None,
    task: TaskOpt = None,
    example: Annotated[
        Path | None,
        typer.Option(
            "--example",
            help="A real input: a .json object for one row (or a list of row objects), or a "
            ".csv with a header. It types the signature and is predicted before registering.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Predict the example (or a row built from the signature) before registering, "
            "and refuse a model that cannot. --no-check: for a model that cannot run here.",
        ),
    ] = True,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            metavar="TYPE",
            help="A type a .skops file may hold beyond scikit-learn's and numpy's, e.g. "
            "mypackage.MyTransformer (repeatable; the refusal names them). Trusting a type runs "
            "its code when the model loads.",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a joblib model file (or pickle), a .skops file, an .onnx file or an MLflow model
    directory, and add it to the registry as the next version.

    The model's typed input signature is recorded (from --example, else inferred from the
    model, saying what could not be), and a smoke prediction proves it can serve: a model that
    cannot predict is refused (exit 2) and nothing is written.

    Loading a joblib file runs code from it: register only files you trust. A .skops file
    (the format for files from someone else) loads only trusted types: others are refused,
    naming them, unless given with --trust.
    """
    from mlserve.runtime.signature import read_example

    settings = load_cli_settings(config, registry={"path": registry})
    tags = parse_tags(tag or [])
    recorded = read_metrics_file(metrics) if metrics is not None else {}
    rows = read_example(example) if example is not None else None
    meta = open_registry(settings).register(
        path,
        name=name,
        aliases=alias or [],
        description=description,
        tags=tags,
        metrics=recorded,
        task=check_task(task),
        example=rows,
        check=check,
        trust=trust or [],
    )
    if as_json:
        print_json(meta.model_dump(mode="json"))
    else:
        render_registered(meta)
        check_note(check)
