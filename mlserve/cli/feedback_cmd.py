"""`mlserve feedback`: send true labels of predictions (request_id, label) to a running server."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt, client_settings, make_client
from mlserve.cli._common import ConfigOpt, JsonOpt, cli_errors, console, err_console, print_json

if TYPE_CHECKING:
    from mlserve.client import Client
    from mlserve.schemas import FeedbackResult

DEFAULT_CHUNK = 500
SHOWN_FAILURES = 10


def _usage(message: str) -> Exception:
    from mlserve.errors import UsageError

    return UsageError(message)


# ---------------------------------------------------------------------------- reading labels
def read_labels(path: Path) -> list[tuple[str, Any]]:
    """(request_id, label) pairs from a .csv file with `request_id` and `label` columns, or a
    .jsonl file of {"request_id": ..., "label": ...} objects. Blank lines are skipped."""
    if not path.is_file():
        raise _usage(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise _usage(f"{path}: expected a .csv or .jsonl file of request_id,label")
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            labels = _read_csv(fh, path) if suffix == ".csv" else _read_jsonl(fh, path)
    except UnicodeDecodeError:
        raise _usage(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise _usage(f"{path} is not readable CSV: {exc}") from None
    except OSError as exc:
        raise _usage(f"cannot read {path}: {exc.strerror}") from None
    if not labels:
        raise _usage(f"{path} holds no labels")
    return labels


def _read_csv(fh: Any, path: Path) -> list[tuple[str, Any]]:
    reader = csv.DictReader(fh)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("request_id", "label") if c not in header]
    if missing:
        raise _usage(
            f"{path} needs the columns request_id and label "
            f"(missing {', '.join(missing)}; found {', '.join(header) or 'none'})"
        )
    reader.fieldnames = header
    out: list[tuple[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        request_id, label = (row.get("request_id") or "").strip(), (row.get("label") or "").strip()
        if not request_id and not label and not any((v or "").strip() for v in row.values()):
            continue  # a blank line
        if not request_id or not label:
            empty = "request_id" if not request_id else "label"
            raise _usage(f"{path} row {line}: {empty} is empty")
        out.append((request_id, label))
    return out


def _read_jsonl(fh: Any, path: Path) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for line, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _usage(f"{path} line {line} is not valid JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise _usage(f"{path} line {line}: expected an object with request_id and label")
        request_id, label = item.get("request_id"), item.get("label")
        if not isinstance(request_id, str) or not request_id.strip():
            raise _usage(f"{path} line {line}: request_id must be a non-empty string")
        if not isinstance(label, str | int | float) or label == "":
            raise _usage(f"{path} line {line}: label must be a string, number or boolean")
        out.append((request_id.strip(), label))
    return out


# ---------------------------------------------------------------------------- sending
@dataclass(slots=True)
class Summary:
    sent: int = 0
    accepted: int = 0
    replaced: int = 0
    unknown: int = 0
    invalid: int = 0
    failures: list[FeedbackResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.unknown + self.invalid

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "replaced": self.replaced,
            "unknown": self.unknown,
            "invalid": self.invalid,
            "failures": [
                {"request_id": f.request_id, "outcome": f.outcome, "error": f.error}
                for f in self.failures
            ],
        }


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_labels(client: Client, labels: Sequence[tuple[str, Any]], chunk_size: int) -> Summary:
    """Send labels in chunks (one POST /api/feedback each); counts every item's outcome."""
    from rich.progress import Progress

    summary = Summary()
    show = len(labels) > chunk_size and err_console.is_terminal
    with Progress(console=err_console, transient=True, disable=not show) as progress:
        task = progress.add_task("sending labels", total=len(labels))
        for chunk in _chunks(labels, chunk_size):
            response = client.feedback(chunk)
            summary.sent += len(chunk)
            summary.accepted += response.accepted
            summary.replaced += response.replaced
            summary.unknown += response.unknown
            summary.invalid += response.invalid
            summary.failures += [r for r in response.items if r.outcome in ("unknown", "invalid")]
            progress.advance(task, len(chunk))
    return summary


def render(summary: Summary) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="feedback", title_justify="left")
    for column in ("sent", "accepted", "replaced", "unknown", "invalid"):
        table.add_column(column, justify="right")
    table.add_row(
        *(str(n) for n in (summary.sent, summary.accepted, summary.replaced, summary.unknown,
                           summary.invalid))
    )  # fmt: skip
    console.print(table)
    for failure in summary.failures[:SHOWN_FAILURES]:
        err_console.print(f"{failure.outcome}: {escape(failure.error or failure.request_id)}")
    more = len(summary.failures) - SHOWN_FAILURES
    if more > 0:
        err_console.print(f"… and {more} more (--json lists them all)")


@cli_errors
def feedback(
    file: Annotated[
        Path,
        typer.Argument(
            help=".csv with request_id and label columns, or .jsonl of "
            '{"request_id": ..., "label": ...} objects.',
            dir_okay=False,
            show_default=False,
        ),
    ],
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            help="Labels per request (at most the server's feedback.max_items).",
            min=1,
        ),
    ] = DEFAULT_CHUNK,  # fmt: skip
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send true labels of earlier predictions to a server, for live accuracy and drift.

    A prediction's id is the request_id of its answer (a batch row's `id`); `mlserve predict
    --json` and `--output` print it for every input.

    Counts labels accepted, replaced, unknown (no such prediction) and invalid; exit 1 if any.

    Example: mlserve feedback labels.csv --url http://mlserve:8000
    """
    settings = client_settings(config, url, api_key, timeout)
    labels = read_labels(file)
    with make_client(settings) as client:
        summary = send_labels(client, labels, chunk_size)
    if as_json:
        print_json(summary.as_dict())
    else:
        render(summary)
    if summary.failed:
        raise typer.Exit(1)
