"""`mlserve models`: list, show, alias and delete registered models; their live quality."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt
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

app = typer.Typer(
    help="List, inspect, alias and delete registered models; show their live quality.",
    no_args_is_help=True,
)

RefArg = Annotated[str, typer.Argument(help="Model reference: name, name:VERSION or name@ALIAS.")]


def _registry(config: Any, registry: Any) -> Any:
    return open_registry(load_cli_settings(config, registry={"path": registry}))


def _fmt_metric(metrics: dict[str, Any]) -> str:
    keys = ("accuracy", "macro_f1", "r2", "mae")
    shown = [f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), int | float)]
    return " ".join(shown) or "-"


@app.command("list")
@cli_errors
def list_models(
    registry: RegistryOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """List the models in the registry with their versions and aliases.

    A model whose registry files cannot be read is listed as broken, with the reason on
    stderr, and the command exits 1."""
    from rich.markup import escape
    from rich.table import Table

    reg = _registry(config, registry)
    models = reg.list_models()
    broken = [m for m in models if m.error is not None]
    if as_json:
        print_json([m.model_dump(mode="json") for m in models])
    elif not models:
        err_console.print(
            f"registry {reg.root} is empty; add a model with `mlserve train` or `mlserve register`"
        )
    else:
        table = Table(title=f"models in {reg.root}", title_justify="left")
        for col in ("name", "task", "versions", "latest", "aliases", "latest metrics"):
            table.add_column(col)
        for m in models:
            aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-"
            if m.error is None:
                shown = _fmt_metric(reg.metadata(m.name, m.latest_version).metrics)
            else:
                shown = "[red]broken[/] (see below)"
            table.add_row(
                m.name,
                m.task or "-",
                str(len(m.versions)),
                str(m.latest_version),
                aliases,
                shown,
            )
        console.print(table)
    for m in broken:
        err_console.print(f"error: model {m.name} is broken: {escape(m.error or '')}")
    if broken:
        raise typer.Exit(1)


@app.command("show")
@cli_errors
def show(
    ref: RefArg, registry: RegistryOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a version's metadata: metrics, classes, input schema, sha256, versions used."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from mlserve.registry import version_mismatch_warnings

    reg = _registry(config, registry)
    meta = reg.resolve(ref)
    aliases = sorted(a for a, v in reg.aliases(meta.name).items() if v == meta.version)
    notes = version_mismatch_warnings(meta)
    if as_json:
        data = meta.model_dump(mode="json")
        data["aliases"] = aliases
        data["warnings"] = notes
        print_json(data)
        return
    schema = meta.input_schema
    inputs = (
        "text"
        if schema.kind == "text"
        else f"{schema.n_features} features"
        + (f": {', '.join(schema.feature_names)}" if schema.feature_names else "")
    )
    lines = [
        f"[bold]{meta.name}:{meta.version}[/]  aliases: {', '.join(aliases) or '-'}",
        f"task        {meta.task} ({meta.estimator})",
        f"input       {inputs}",
        f"classes     {', '.join(map(str, meta.classes)) if meta.classes else '-'}",
        f"probabilities {'yes' if meta.has_predict_proba else 'no (predict only)'}",
        f"created     {meta.created_at:%Y-%m-%d %H:%M:%S %Z}",
        f"source      {meta.source}",
        f"sha256      {meta.sha256}",
        f"size        {meta.size_bytes:,} bytes",
        f"versions    python {meta.python_version}, scikit-learn {meta.sklearn_version}, "
        f"joblib {meta.joblib_version}",
    ]
    if meta.description:
        lines.append(f"description {meta.description}")
    if meta.tags:
        lines.append("tags        " + ", ".join(f"{k}={v}" for k, v in meta.tags.items()))
    console.print(Panel("\n".join(lines), expand=False))
    for note in notes:
        err_console.print(f"[yellow]warning:[/] {note}")
    if schema.columns:
        table = Table(
            title="signature" + (" (DataFrame)" if schema.dataframe else ""),
            title_justify="left",
        )
        for col in ("column", "type", "nullable", "values"):
            table.add_column(col)
        for c in schema.columns:
            values = ", ".join(map(str, (c.categories or [])[:8]))
            if len(c.categories or []) > 8:
                values += f", … ({len(c.categories or [])})"
            table.add_row(escape(c.name), c.dtype, "yes" if c.nullable else "no", escape(values))
        console.print(table)
    for note in schema.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    scalar = {k: v for k, v in meta.metrics.items() if isinstance(v, int | float | str)}
    if scalar:
        table = Table(title="metrics (hold-out)", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in scalar.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(table)
    per_class = meta.metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        table = Table(title="per class", title_justify="left")
        for col in ("class", "precision", "recall", "f1", "support"):
            table.add_column(col, justify="right" if col != "class" else "left")
        for label, row in per_class.items():
            table.add_row(
                label,
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['f1']:.3f}",
                str(row["support"]),
            )
        console.print(table)


@app.command("alias")
@cli_errors
def alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version the alias should point at.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias, e.g. production.")],
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Point ALIAS of a model at VERSION (serving replicas pick it up within seconds)."""
    reg = _registry(config, registry)
    reg.set_alias(name, alias_name, version)
    console.print(f"{name}@{alias_name} → {name}:{version}")


@app.command("unalias")
@cli_errors
def unalias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias to remove.")],
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove an alias (the version it pointed at stays)."""
    reg = _registry(config, registry)
    version = reg.remove_alias(name, alias_name)
    console.print(f"removed {name}@{alias_name} (was {name}:{version})")


@app.command("delete")
@cli_errors
def delete(
    ref: Annotated[
        str,
        typer.Argument(help="name:VERSION or name@ALIAS deletes one version; name deletes all."),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Also delete versions an alias points at.")
    ] = False,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a version, or a whole model. Versions with aliases need --force."""
    reg = _registry(config, registry)
    from mlserve.registry import ModelRef

    parsed = ModelRef.parse(ref)
    deleted = reg.delete(parsed, force=force)
    if as_json:
        print_json({"name": parsed.name, "deleted_versions": deleted})
    else:
        console.print(f"deleted {parsed.name} version(s) {', '.join(map(str, deleted))}")


# ---------------------------------------------------------------------------- live quality
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _drift_cell(psi: float | None, status: str) -> str:
    shown = {"insufficient_data": "too few", "unavailable": "n/a"}.get(status, status)
    return shown if psi is None else f"{psi:.3f} {shown}"


def _version_of(client: Any, ref: str) -> tuple[str, int | None]:
    """(name, version) of a reference; an alias is resolved by the server."""
    from mlserve.client import raise_for_error
    from mlserve.errors import NotFoundError
    from mlserve.registry import ModelRef

    parsed = ModelRef.parse(ref)
    if parsed.alias is None:
        return parsed.name, parsed.version
    info = client.request("GET", f"/api/models/{parsed.name}")
    raise_for_error(info)
    aliases = info.json().get("all_aliases") or {}
    if parsed.alias not in aliases:
        raise NotFoundError(f"model '{parsed.name}' has no alias '{parsed.alias}' on the server")
    return parsed.name, int(aliases[parsed.alias])


def render_quality(report: Any) -> None:
    """Tables of a QualityReport: one summary row per version, then each version's confusion
    matrix and drift."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"live quality of {report.model} (rolling: last {report.window} labels)",
        title_justify="left",
    )
    # Six narrow columns, so that it fits a terminal 80 wide; --json has everything.
    for column in ("version", "predicted", "labelled", "accuracy", "macro-F1", "drift"):
        table.add_column(column, justify="left" if column in ("version", "drift") else "right")
    for v in report.versions:
        table.add_row(
            f"{v.version}{' (serving)' if v.serving else ''}",
            str(v.predictions),
            str(v.feedback),
            _pct(v.rolling.accuracy),
            _pct(v.rolling.macro_f1),
            _drift_cell(v.drift.psi, v.drift.status),
        )
    console.print(table)
    if not report.versions:
        err_console.print(f"no predictions of {report.model} are remembered yet")
    for v in report.versions:
        lines = []
        if v.training.accuracy is not None:
            lines.append(
                f"hold-out at training: accuracy {_pct(v.training.accuracy)}, "
                f"macro-F1 {_pct(v.training.macro_f1)}"
            )
        windows = [f"{name} {_pct(f.accuracy)}" for name, f in v.windows.items() if f.labelled]
        if windows:
            lines.append("live accuracy of the predictions of the last " + ", ".join(windows))
        for line in lines:
            console.print(f"{report.model}:{v.version} {line}")
        matrix = v.confusion_matrix
        if v.rolling.labelled:
            cm = Table(
                title=f"{report.model}:{v.version} confusion matrix (rows: true, columns: "
                f"predicted; last {v.rolling.labelled} labels)",
                title_justify="left",
            )
            cm.add_column("true \\ predicted")
            for label in matrix.labels:
                cm.add_column(escape(label), justify="right")
            for label, row in zip(matrix.labels, matrix.matrix, strict=True):
                cm.add_row(escape(label), *(str(n) for n in row))
            console.print(cm)
        drift = v.drift
        if drift.classes:
            dt = Table(
                title=f"{report.model}:{v.version} drift over {drift.predictions} recent "
                f"predictions: PSI {_pct(drift.psi)} ({drift.status})",
                title_justify="left",
            )
            for column in ("predicted class", "hold-out share", "live share", "PSI term"):
                dt.add_column(column, justify="left" if column == "predicted class" else "right")
            for c in drift.classes:
                dt.add_row(escape(c.label), _pct(c.training), _pct(c.live), f"{c.psi:.4f}")
            console.print(dt)
            if drift.confidence is not None:
                console.print(
                    f"confidence: PSI {drift.confidence.psi:.3f}; mean "
                    f"{_pct(v.training.mean_confidence)} at training, "
                    f"{_pct(drift.live_mean_confidence)} now"
                )
        elif drift.reason:
            err_console.print(f"{report.model}:{v.version} drift: {escape(drift.reason)}")


@app.command("quality")
@cli_errors
def quality(
    ref: RefArg,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            help="Rolling figures over the last N labels (default: the server's).",
            min=1,
            show_default=False,
        ),
    ] = None,  # fmt: skip
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show live accuracy, confusion matrix and drift of a model, from a running server.

    From labels sent with `mlserve feedback`, next to the hold-out figures of training.

    REF: name (every version with predictions), name:VERSION or name@ALIAS.
    """
    from mlserve.cli._client_opts import client_settings, make_client

    settings = client_settings(config, url, api_key, timeout)
    with make_client(settings) as client:
        name, version = _version_of(client, ref)
        report = client.quality(name, version=version, window=window)
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        render_quality(report)
