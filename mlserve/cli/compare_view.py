"""`mlserve predict --compare a,b`: one input asked of several models, shown side by side."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from mlserve.cli._client_opts import make_client
from mlserve.cli._common import console, err_console
from mlserve.errors import UsageError

if TYPE_CHECKING:
    from mlserve.schemas import CompareResponse

__all__ = ["compare_models", "parse_models", "render_comparison"]

ONE_INPUT = "--compare asks several models about one input: give one text or --features JSON"


def parse_models(value: str) -> list[str]:
    """`a,b@staging,c:3` as references, in order; each named once."""
    refs = [part.strip() for part in value.split(",") if part.strip()]
    if not refs:
        raise UsageError("--compare needs model references: --compare a,b@staging,c:3")
    twice = sorted({r for r in refs if refs.count(r) > 1})
    if twice:
        raise UsageError(f"--compare names {', '.join(twice)} twice; name each model once")
    return refs


def one_input(texts: list[str], features: str | None) -> tuple[str | None, Any]:
    """(text, features) of the one input: a text argument, or --features JSON."""
    if features is not None:
        if texts:
            raise UsageError(ONE_INPUT)
        try:
            row = json.loads(features)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--features is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict | list):
            raise UsageError('--features must be a JSON object {"name": value} or a list')
        return None, row
    if len(texts) != 1 or texts == ["-"]:
        raise UsageError(ONE_INPUT)
    return texts[0], None


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_comparison(response: CompareResponse, shown_input: Any) -> None:
    """A row per model, in the order asked: its version, prediction, confidence and time, or
    its error."""
    from rich.markup import escape
    from rich.table import Table

    from mlserve.schemas import CompareError

    table = Table(title=escape(_short(shown_input)), title_justify="left")
    table.add_column("model", no_wrap=True)  # the references stay whole; answers wrap
    table.add_column("version", no_wrap=True)
    table.add_column("prediction", overflow="fold")
    table.add_column("confidence", no_wrap=True)
    table.add_column("time (ms)", justify="right", no_wrap=True)
    for item in response.results:
        if isinstance(item, CompareError):
            error = f"[red]{escape(item.error.code)}[/]: {escape(item.error.message)}"
            table.add_row(escape(item.model), "-", error, "-", "-")
            continue
        confidence = "-" if item.confidence is None else f"{item.confidence:.3f}"
        table.add_row(
            escape(item.model),
            str(item.version),
            escape(str(item.prediction)),
            confidence,
            f"{item.processing_time_ms:.1f}",
        )
    console.print(table)


def compare_models(
    settings: Any,
    models: str,
    texts: list[str],
    features: str | None,
    conflicts: dict[str, Any],
    *,
    as_json: bool,
) -> None:
    """Ask the server's POST /api/predict/compare and show the answers; exits 1 when a model
    could not answer (the others' answers are shown all the same). `conflicts`: the predict
    options that do not go with --compare, by flag, with their values."""
    import typer

    from mlserve.schemas import CompareError

    given = [flag for flag, value in conflicts.items() if value not in (None, False)]
    if given:
        raise UsageError(f"--compare asks a server several models at once: not with {given[0]}")
    refs = parse_models(models)
    text, row = one_input(texts, features)
    with make_client(settings) as client:
        response = client.compare(text, features=row, models=refs)
    if as_json:
        sys.stdout.write(json.dumps(response.model_dump(mode="json"), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        render_comparison(response, text if text is not None else row)
    failed = [item.model for item in response.results if isinstance(item, CompareError)]
    if failed:
        from rich.markup import escape

        names = escape(", ".join(failed))
        err_console.print(f"{len(failed)} of {len(refs)} models did not answer: {names}")
        raise typer.Exit(1)
