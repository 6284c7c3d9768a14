"""`mlserve predict`: ask a running server (or the local registry) for predictions."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt, client_settings, make_client
from mlserve.cli._common import ConfigOpt, RegistryOpt, cli_errors, console, err_console

DEFAULT_CHUNK = 100


@dataclass(slots=True)
class Inputs:
    """Either texts or feature records, in input order, with where each came from."""

    texts: list[str] | None = None
    records: list[Any] | None = None
    origins: list[str] | None = None  # "reviews.csv line 150" per input (files and stdin)
    cells: list[dict[str, str]] | None = None  # a CSV's raw cells, typed by a local model

    @property
    def items(self) -> list[Any]:
        return self.texts if self.texts is not None else self.records or []

    def origin(self, index: int) -> str | None:
        """Where input `index` came from (its file and line, else its position), as errors
        name it; None for the only input, given as an argument."""
        if self.origins:
            return self.origins[index]
        return f"input {index + 1}" if len(self.items) > 1 else None

    def name_error(self, index: int, message: str) -> str:
        """`message` about input `index`, prefixed with where that input came from."""
        origin = self.origin(index)
        return message if origin is None else f"{origin}: {message}"


@dataclass(slots=True)
class Result:
    input: Any
    prediction: Any
    confidence: float | None
    probabilities: dict[str, float] | None
    model: str
    version: int
    request_id: str | None = None  # the server's id of this prediction (for `mlserve feedback`)
    scores: dict[str, float] | None = None  # raw scores of models without probabilities

    def as_dict(self) -> dict[str, Any]:
        out = {
            "input": self.input,
            "prediction": self.prediction,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
            "scores": self.scores,
        }
        return out


# ---------------------------------------------------------------------------- reading inputs
def _usage(message: str) -> Exception:
    from mlserve.errors import UsageError

    return UsageError(message)


def _read_lines(lines: Iterator[str], source: str) -> Inputs:
    """A text per line; blank lines separate nothing and are skipped (line numbers count them)."""
    texts: list[str] = []
    origins: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            texts.append(line.rstrip("\r\n"))
            origins.append(f"{source} line {number}")
    return Inputs(texts=texts, origins=origins)


def _csv_rows(fh: Any) -> Iterator[tuple[int, list[str]]]:
    """(the line a row starts on, its values) for each row, blank lines skipped: a quoted
    field may span lines, so the reader's count after a row is where it ended."""
    reader = csv.reader(fh)
    while True:
        start = reader.line_num + 1
        values = next(reader, None)
        if values is None:
            return
        if values:
            yield start, values


def _cells(header: list[str], values: list[str], line: int, path: Path) -> dict[str, str]:
    if len(values) > len(header):
        raise _usage(f"{path} line {line} has {len(values)} values for {len(header)} columns")
    return dict(zip(header, values + [""] * (len(header) - len(values)), strict=True))


def _guess_record(cells: dict[str, str]) -> dict[str, Any]:
    """CSV cells as JSON values: numbers, true/false, empty as null (missing), else strings;
    the server checks each against its column's type. (With --local the model's signature
    types each cell exactly, so a string column of digits stays a string.)"""
    from mlserve.runtime.signature import guess_cell

    return {key: guess_cell(raw) for key, raw in cells.items()}


def _read_csv(fh: Any, path: Path, text_column: str | None) -> Inputs:
    rows = _csv_rows(fh)
    header = next(rows, (0, []))[1]
    if text_column and text_column not in header:
        raise _usage(
            f"--text-column '{text_column}' is not in {path} (columns: {', '.join(header)})"
        )
    column = text_column or ("text" if "text" in header else None)
    texts: list[str] = []
    records: list[Any] = []
    cells: list[dict[str, str]] = []
    origins: list[str] = []
    for line, values in rows:
        if column is not None:
            at = header.index(column)
            # An empty cell is sent as it is: the model refuses it, naming this line.
            texts.append(values[at] if at < len(values) else "")
        else:
            cells.append(_cells(header, values, line, path))
            records.append(_guess_record(cells[-1]))
        origins.append(f"{path} line {line}")
    if column is not None:
        return Inputs(texts=texts, origins=origins)
    return Inputs(records=records, origins=origins, cells=cells)


def read_file(path: Path, text_column: str | None) -> Inputs:
    """.txt: a text per line; .csv: a text column or numeric feature columns; .jsonl: texts,
    {"text": ...}, {"features": ...} or feature objects."""
    if not path.is_file():
        raise _usage(f"--file {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            if suffix == ".csv":
                return _read_csv(fh, path, text_column)
            if suffix == ".jsonl":
                return _read_jsonl(fh, path)
            return _read_lines(iter(fh), str(path))
    except UnicodeDecodeError:
        raise _usage(f"--file {path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise _usage(f"--file {path} is not readable CSV: {exc}") from None


def _read_jsonl(lines: Any, path: Path) -> Inputs:
    texts: list[str] = []
    records: list[Any] = []
    origins: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _usage(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(item, dict) and "features" in item:
            records.append(item["features"])
        elif isinstance(item, dict | list):
            records.append(item)
        else:
            raise _usage(f"{path} line {number}: expected a text or a record, got {item!r:.40}")
        origins.append(f"{path} line {number}")
    if texts and records:
        raise _usage(f"{path} mixes texts and feature records; use one kind per file")
    if texts or not records:
        return Inputs(texts=texts, origins=origins)
    return Inputs(records=records, origins=origins)


def gather_inputs(
    texts: list[str], file: Path | None, features: str | None, text_column: str | None
) -> Inputs:
    sources = sum([bool(texts), file is not None, features is not None])
    if sources == 0:
        raise _usage("give texts as arguments, '-' for stdin, --file FILE or --features JSON")
    if sources > 1:
        raise _usage("give inputs one way: text arguments, --file, or --features")
    if features is not None:
        try:
            parsed = json.loads(features)
        except json.JSONDecodeError as exc:
            raise _usage(f"--features is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict | list):
            raise _usage('--features must be a JSON object {"name": value} or a list')
        return Inputs(records=[parsed])
    if file is not None:
        inputs = read_file(file, text_column)
    elif texts == ["-"]:
        inputs = _read_lines(iter(sys.stdin), "stdin")
    elif "-" in texts:
        raise _usage("'-' reads texts from stdin: give it alone, without other texts")
    else:
        inputs = Inputs(texts=list(texts))
    if not inputs.items:
        raise _usage("no inputs to predict (the file or stdin was empty)")
    return inputs


# ---------------------------------------------------------------------------- predicting
def _chunks(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


# How the server names a row of a batch in its errors: 'texts.49', records.3.petal_width.
_ROW_REF = re.compile(r"(?<![\w.])(texts|records)\.(\d+)(?!\d)")
_ROW_FIELD = {"texts": "text", "records": "features"}


def _name_server_row(exc: Exception, inputs: Inputs, start: int, count: int) -> Exception:
    """The server's 422 about row 'texts.49' of the chunk at `start`, told about the input
    itself: `reviews.csv line 150: 'text' cannot be empty or whitespace only`."""
    from mlserve.errors import ServerResponseError

    if not isinstance(exc, ServerResponseError) or exc.status_code != 422:
        return exc
    message = exc.message.removeprefix(f"{exc.status_code} {exc.code}: ")
    rows = [int(m[2]) for m in _ROW_REF.finditer(message) if int(m[2]) < count]
    if not rows:
        return exc
    first = rows[0]

    def field(match: re.Match[str]) -> str:
        index = int(match[2])
        name = _ROW_FIELD[match[1]]
        if index == first:
            return name
        if index < count:  # another row named in the same answer (pydantic lists several)
            return f"({inputs.origin(start + index)}) {name}"
        return match[0]

    return ServerResponseError(
        inputs.name_error(start + first, _ROW_REF.sub(field, message)),
        status=exc.status_code,
        code=exc.code,
        request_id=exc.request_id,
        details=exc.details,
    )


def predict_remote(
    settings: Any, inputs: Inputs, model: str | None, batch_size: int
) -> list[Result]:
    from rich.progress import Progress

    from mlserve.errors import ServerResponseError

    results: list[Result] = []
    with make_client(settings) as client:
        items = inputs.items
        # One argument goes to /api/predict; inputs from a file or stdin go in batches, even
        # one, so that an error about 'texts.0' names the line it came from.
        if len(items) == 1 and inputs.origins is None:
            one = client.predict(
                inputs.texts[0] if inputs.texts else None,
                features=inputs.records[0] if inputs.records else None,
                model=model,
            )
            return [
                Result(
                    items[0],
                    one.prediction,
                    one.confidence,
                    one.probabilities,
                    one.model,
                    one.version,
                    one.request_id,
                    one.scores,
                )
            ]
        limit = client.index().get("limits", {}).get("max_batch_items", batch_size)
        size = max(1, min(batch_size, int(limit)))
        show = len(items) > size and err_console.is_terminal
        with Progress(console=err_console, transient=True, disable=not show) as progress:
            task = progress.add_task("predicting", total=len(items))
            for start, chunk in _chunks(items, size):
                try:
                    batch = client.predict_batch(
                        chunk if inputs.texts is not None else None,
                        records=chunk if inputs.records is not None else None,
                        model=model,
                    )
                except ServerResponseError as exc:
                    raise _name_server_row(exc, inputs, start, len(chunk)) from None
                for item, p in zip(chunk, batch.predictions, strict=True):
                    results.append(
                        Result(
                            item,
                            p.prediction,
                            p.confidence,
                            p.probabilities,
                            batch.model,
                            batch.version,
                            p.id,
                            p.scores,
                        )
                    )
                progress.advance(task, len(chunk))
    return results


def local_default(registry: Any, settings: Any, *, texts: bool) -> str:
    """The model --local uses without --model, picked as the server picks: the only model
    (of server.models, else of the registry), else the only one taking texts (or features)."""
    from mlserve.errors import MlserveError, UsageError
    from mlserve.registry import ModelRef
    from mlserve.serving.manager import KIND_FIELDS, InputKind, default_choice

    configured = settings.server.models
    refs = {ModelRef.parse(r).name: r for r in configured} or {n: n for n in registry.names()}
    if not refs:
        raise UsageError(f"no models to predict with: the registry {registry.root} holds none")
    kind: InputKind = "text" if texts else "tabular"
    kinds: dict[str, InputKind | None] = dict.fromkeys(refs)
    if len(refs) > 1:  # the only model needs no look
        for name, ref in refs.items():
            try:
                meta = registry.resolve(ref, default_alias=settings.server.default_alias)
            except MlserveError:
                continue  # unreadable: nobody's default (the server cannot serve it either)
            kinds[name] = meta.input_schema.kind
    choice = default_choice(kinds, kind)
    if isinstance(choice, str):
        return str(refs[choice])
    fits = [n for n in choice if kinds[n] == kind]
    what = KIND_FIELDS[kind]
    why = (
        f"{len(fits)} models take {what} ({', '.join(fits)})"
        if fits
        else f"no model takes {what} ({', '.join(choice)})"
    )
    raise UsageError(
        f"--model is required: {why}; name one with --model or set server.default_model"
    )


def _prepare_local(loaded: Any, inputs: Inputs, index: int, item: Any) -> Any:
    """One input prepared as the server prepares it; an error names the input (its line)."""
    from mlserve.errors import InvalidInputError

    if inputs.cells is not None and loaded.signature is not None:
        # CSV cells typed by the model's signature (its errors name the line themselves)
        cells = inputs.cells[index]
        if all(n in cells for n in loaded.feature_names):  # else prepare() names what lacks
            where = inputs.origin(index) or "input"
            names = loaded.feature_names
            item = {n: loaded.parse_cell(j, cells[n], where) for j, n in enumerate(names)}
    try:
        if inputs.texts is not None:
            return loaded.prepare(text=item)
        return loaded.prepare(features=item)
    except InvalidInputError as exc:
        raise InvalidInputError(inputs.name_error(index, exc.message)) from None


def predict_local(
    settings: Any, inputs: Inputs, model: str | None, batch_size: int
) -> list[Result]:
    """In-process prediction from the registry, through the same runtime the server uses."""
    from mlserve.cli._common import open_registry
    from mlserve.runtime.model import LoadedModel

    registry = open_registry(settings)
    reference = model or settings.server.default_model
    if reference is None:
        reference = local_default(registry, settings, texts=inputs.texts is not None)
    artifact = registry.load(reference, default_alias=settings.server.default_alias)
    for note in artifact.warnings:
        err_console.print(f"[yellow]warning:[/] {note}")
    loaded = LoadedModel(
        artifact.estimator, artifact.metadata, max_text_length=settings.server.max_text_length
    )
    results: list[Result] = []
    for start, chunk in _chunks(inputs.items, batch_size):
        rows = [_prepare_local(loaded, inputs, start + i, item) for i, item in enumerate(chunk)]
        for item, p in zip(chunk, loaded.predict(rows), strict=True):
            results.append(
                Result(
                    item,
                    p.label,
                    p.confidence,
                    p.probabilities,
                    loaded.name,
                    loaded.version,
                    scores=p.scores,
                )
            )
    return results


# ---------------------------------------------------------------------------- output
def _bar(value: float | None, width: int = 10) -> str:
    if value is None:
        return "-"
    filled = round(value * width)
    return f"{'█' * filled}{'░' * (width - filled)} {value:.3f}"


def _short(item: Any, limit: int = 60) -> str:
    text = item if isinstance(item, str) else json.dumps(item)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_table(results: list[Result], top: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    first = results[0]
    table = Table(title=f"{first.model}:{first.version}", title_justify="left")
    table.add_column("input", overflow="fold")
    table.add_column("prediction")
    table.add_column("confidence")
    if top > 0:
        table.add_column(f"top {top}")
    for r in results:
        row = [escape(_short(r.input)), escape(str(r.prediction)), _bar(r.confidence)]
        if top > 0:
            if r.probabilities:
                ranked = sorted(r.probabilities.items(), key=lambda kv: kv[1], reverse=True)
                row.append(", ".join(f"{escape(k)} {v:.2f}" for k, v in ranked[:top]))
            else:
                row.append("-")
        table.add_row(*row)
    console.print(table)


def write_output(path: Path, results: list[Result]) -> None:
    suffix = path.suffix.lower()
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            if suffix == ".csv":
                classes = sorted({k for r in results for k in (r.probabilities or {})})
                writer = csv.writer(fh)
                writer.writerow(
                    ["input", "prediction", "confidence", "model", "version", "request_id",
                     *[f"p_{c}" for c in classes]]
                )  # fmt: skip
                for r in results:
                    probs = r.probabilities or {}
                    writer.writerow(
                        [
                            r.input if isinstance(r.input, str) else json.dumps(r.input),
                            r.prediction,
                            "" if r.confidence is None else r.confidence,
                            r.model,
                            r.version,
                            r.request_id or "",
                            *[probs.get(c, "") for c in classes],
                        ]
                    )
            else:
                for r in results:
                    fh.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise _usage(f"cannot write --output {path}: {exc.strerror}") from None


@cli_errors
def predict(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            help="Texts to classify; '-' reads one text per line from stdin.", show_default=False
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help=".txt (a text per line), .csv or .jsonl inputs.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="CSV column holding the text (default: 'text' when "
            "present; otherwise every column is a numeric feature).",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="One tabular input as JSON: '{\"a\": 1.0, ...}' or '[1.0, 2.0]'.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model reference: name, name:3 or name@alias.", show_default=False
        ),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Ask several models about one input, side by side: a,b@staging,c:3.",
            show_default=False,
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Predict in-process from the registry, no server.")
    ] = False,
    top: Annotated[int, typer.Option("--top", help="Show the K most likely classes.", min=0)] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per input (JSON lines).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write results to a .jsonl or .csv file.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", help="Inputs per batch request (capped by the server).", min=1
        ),
    ] = DEFAULT_CHUNK,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Predict texts or feature rows with a running server (or --local, from the registry).

    Examples: mlserve predict "I loved it" · mlserve predict - < reviews.txt ·
    mlserve predict --file rows.csv --model iris --json
    """
    settings = client_settings(config, url, api_key, timeout, registry={"path": registry})
    if compare is not None:  # several models, one input: cli/compare_view.py
        from mlserve.cli.compare_view import compare_models

        flags = {"--local": local, "--file": file, "--model": model, "--output": output}
        compare_models(settings, compare, texts or [], features, flags, as_json=as_json)
        return
    inputs = gather_inputs(texts or [], file, features, text_column)
    if local:
        results = predict_local(settings, inputs, model, batch_size)
    else:
        results = predict_remote(settings, inputs, model, batch_size)
    if output is not None:
        write_output(output, results)
    if as_json:
        for r in results:
            sys.stdout.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif output is None or len(results) <= 20:
        render_table(results, top)
    if output is not None:
        err_console.print(f"wrote {len(results)} result(s) to {output}")
