"""Request inputs for a load test: the bundled sample texts or a .txt, .csv or .jsonl file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlserve.errors import UsageError
from mlserve.loadtest.options import MAX_PAYLOADS

__all__ = ["Payloads", "load_payloads", "sample_texts"]


def sample_texts() -> list[str]:
    """The texts of the bundled sentiment corpus."""
    from importlib.resources import files

    data = (files("mlserve.samples") / "sentiment.csv").read_text(encoding="utf-8")
    return [row["text"] for row in csv.DictReader(io.StringIO(data)) if row.get("text")]


@dataclass(frozen=True, kw_only=True)
class Payloads:
    """Inputs for the requests: texts to wrap in a body, or whole bodies sent as they are."""

    texts: tuple[str, ...] = ()
    bodies: tuple[bytes, ...] = ()
    source: str = "built-in samples"


def load_payloads(path: Path | None, *, text_column: str = "text") -> Payloads:
    """Texts from .txt (a line each) or .csv (one column); request bodies from .jsonl."""
    if path is None:
        return Payloads(texts=tuple(sample_texts()[:MAX_PAYLOADS]))
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".jsonl"):
        raise UsageError(f"cannot read --data {path}: use a .txt, .csv or .jsonl file")
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--data file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"--data {path} is a directory") from None
    except UnicodeDecodeError:
        raise UsageError(f"--data file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read --data file {path}: {exc.strerror}") from None
    if suffix == ".txt":
        texts = [line.strip() for line in content.splitlines() if line.strip()]
        return _payloads_or_fail(path, texts=texts)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        if text_column not in (reader.fieldnames or []):
            raise UsageError(
                f"--data {path} has no column '{text_column}' "
                f"(columns: {', '.join(reader.fieldnames or []) or 'none'}); use --text-column"
            )
        texts = [row[text_column] for row in reader if row.get(text_column)]
        return _payloads_or_fail(path, texts=texts)
    bodies: list[bytes] = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--data {path} line {lineno} is not JSON: {exc.msg}") from None
        bodies.append(line.strip().encode())
        if len(bodies) >= MAX_PAYLOADS:
            break
    return _payloads_or_fail(path, bodies=bodies)


def _payloads_or_fail(
    path: Path, *, texts: Sequence[str] = (), bodies: Sequence[bytes] = ()
) -> Payloads:
    if not texts and not bodies:
        raise UsageError(f"--data file {path} holds no input")
    return Payloads(
        texts=tuple(texts[:MAX_PAYLOADS]), bodies=tuple(bodies[:MAX_PAYLOADS]), source=str(path)
    )
