"""Typed input signatures of tabular models: inferred from a fitted pipeline, an input example
or a training DataFrame; values checked against them; DataFrames built from checked rows.

pandas is imported only where a DataFrame is read or built (the `pandas` extra): float-matrix
models never need it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidInputError, InvalidModelError, UsageError
from mlserve.runtime import introspect
from mlserve.schemas import ColumnSpec, ColumnType, Label

__all__ = [
    "PANDAS_HINT",
    "Signature",
    "columns_from_example",
    "columns_from_frame",
    "example_row",
    "guess_cell",
    "import_pandas",
    "infer_columns",
    "read_example",
]

PANDAS_HINT = "install the pandas extra: pip install 'mlserve-sklearn[pandas]'"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_CATEGORIES = 1000  # more distinct values than this: recorded as a plain str column
_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})
_EXPECTED = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "str": "a string",
    "category": "one of the known values",
}


def import_pandas(why: str) -> Any:
    """pandas, or a one-line error naming the extra and why it is needed."""
    try:
        import pandas
    except ImportError:
        raise InvalidModelError(f"{why} needs pandas: {PANDAS_HINT}") from None
    return pandas


# ---------------------------------------------------------------------------- inference
def _kind_of(values: Iterable[Any]) -> ColumnType | None:
    """The column type of JSON-like values (None: only missing values)."""
    kinds: set[ColumnType] = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        else:
            kinds.add("str")
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"int", "float"}:
        return "float"
    return "str"


def columns_from_example(
    names: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> dict[str, ColumnSpec]:
    """What an input example says of each column it has a value for."""
    out: dict[str, ColumnSpec] = {}
    for name in names:
        values = [row.get(name) for row in rows if name in row]
        if not values:
            continue
        kind = _kind_of(values)
        nullable = any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)
        if kind is not None:
            out[name] = ColumnSpec(name=name, dtype=kind, nullable=nullable)
    return out


def columns_from_frame(frame: Any) -> list[ColumnSpec]:
    """The signature of a pandas DataFrame (what `mlserve train` fits on)."""
    from pandas.api import types as pdt

    out: list[ColumnSpec] = []
    for name in frame.columns:
        series = frame[name]
        nullable = bool(series.isna().any())
        dtype = series.dtype
        categories: list[Label] | None = None
        kind: ColumnType
        if isinstance(dtype, _categorical_dtype()):
            kind = "category"
            categories = [introspect.to_label(c) for c in getattr(dtype, "categories", [])]
        elif pdt.is_bool_dtype(dtype):
            kind = "bool"
        elif pdt.is_integer_dtype(dtype):
            kind = "int"
        elif pdt.is_float_dtype(dtype):
            kind = "float"
        else:
            kind = _kind_of(series.dropna().tolist()) or "str"
        out.append(ColumnSpec(name=str(name), dtype=kind, nullable=nullable, categories=categories))
    return out


def _categorical_dtype() -> type:
    import pandas

    return pandas.CategoricalDtype  # type: ignore[no-any-return]


def _column_names(selector: Any, names: Sequence[str]) -> list[str]:
    """The names a fitted ColumnTransformer's column selector stands for."""
    import numpy as np

    if isinstance(selector, str):
        return [selector]
    if isinstance(selector, slice):
        return list(names[selector])
    items = list(np.asarray(selector).ravel()) if selector is not None else []
    if items and all(isinstance(i, bool | np.bool_) for i in items):
        return [n for n, keep in zip(names, items, strict=False) if keep]
    out: list[str] = []
    for item in items:
        if isinstance(item, int | np.integer):
            out.append(names[int(item)])
        else:
            out.append(str(item))
    return out


def _encoder_kind(categories: Any) -> tuple[ColumnType, bool, list[Label] | None]:
    """Type, nullability and values of one column from an encoder's categories_ entry."""
    values = [c for c in categories.tolist() if not (isinstance(c, float) and math.isnan(c))]
    nullable = len(values) < len(categories) or any(c is None for c in values)
    values = [c for c in values if c is not None]
    kind = _kind_of(values) or "str"
    labels = [introspect.to_label(c) for c in values]
    if kind == "str":
        return "str", nullable, labels[:MAX_CATEGORIES]
    return kind, nullable, None


def _walk_column_transformer(
    transformer: Any, names: Sequence[str], found: dict[str, dict[str, Any]]
) -> None:
    for _name, inner, selector in getattr(transformer, "transformers_", []):
        if inner == "drop":
            continue
        columns = _column_names(selector, names)
        parts = introspect.steps(inner) if inner != "passthrough" else []
        for col in columns:
            found.setdefault(col, {})
        if inner == "passthrough" or not parts:
            for col in columns:
                found[col].setdefault("dtype", "float")  # reaches the estimator as is: numbers
            continue
        for part in parts:
            cls = type(part).__name__
            cats = getattr(part, "categories_", None)
            if cats is not None and len(cats) == len(columns):
                for col, entry in zip(columns, cats, strict=True):
                    kind, nullable, values = _encoder_kind(entry)
                    found[col].setdefault("dtype", kind)
                    if values is not None:
                        found[col].setdefault("categories", values)
                    if nullable:
                        found[col]["nullable"] = True
            elif cls == "SimpleImputer" or cls == "KNNImputer" or cls == "IterativeImputer":
                for col in columns:
                    found[col]["nullable"] = True
                    if getattr(part, "strategy", "mean") in ("mean", "median"):
                        found[col].setdefault("dtype", "float")
            elif cls in introspect.TEXT_VECTORIZERS:
                for col in columns:
                    found[col].setdefault("dtype", "str")
            elif cls.endswith("Scaler") or cls in ("PolynomialFeatures", "KBinsDiscretizer"):
                for col in columns:
                    found[col].setdefault("dtype", "float")


def infer_columns(
    estimator: Any,
    names: Sequence[str],
    example: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[ColumnSpec], list[str]]:
    """The typed signature of a model fitted on a DataFrame with columns `names`, and what
    could not be inferred (said to the user). An example's values win over the model's
    encoders; an estimator without a ColumnTransformer takes numbers only."""
    from_example = columns_from_example(names, example or [])
    found: dict[str, dict[str, Any]] = {}
    transformers = [s for s in introspect.steps(estimator) if hasattr(s, "transformers_")]
    for transformer in transformers:
        _walk_column_transformer(transformer, names, found)
    out: list[ColumnSpec] = []
    unknown: list[str] = []
    for name in names:
        guess = found.get(name, {})
        spec = from_example.get(name)
        if spec is not None:
            if spec.dtype == "str" and guess.get("categories"):
                spec.categories = guess["categories"]
            spec.nullable = spec.nullable or bool(guess.get("nullable"))
            out.append(spec)
            continue
        dtype = guess.get("dtype")
        if dtype is None:
            if transformers:
                unknown.append(name)
            dtype = "float"
        out.append(
            ColumnSpec(
                name=name,
                dtype=dtype,
                nullable=bool(guess.get("nullable")),
                categories=guess.get("categories"),
            )
        )
    notes = []
    if unknown:
        notes.append(
            f"could not infer the type of column(s) {', '.join(unknown)} from the model "
            "(assumed float); pass --example with a row of real values to record them"
        )
    return out, notes


def example_row(columns: Sequence[ColumnSpec]) -> dict[str, Any]:
    """A plausible row built from a signature (the smoke prediction without an example)."""
    defaults: dict[str, Any] = {"float": 0.0, "int": 0, "bool": False, "str": "mlserve"}
    row = {}
    for spec in columns:
        if spec.categories:
            row[spec.name] = spec.categories[0]
        else:
            row[spec.name] = defaults.get(spec.dtype, 0.0)
    return row


# ---------------------------------------------------------------------------- examples
def guess_cell(text: str) -> Any:
    """A CSV cell as the JSON value it most likely is (without pandas)."""
    stripped = text.strip()
    if not stripped:
        return None
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return text


def read_example(path: Path) -> list[dict[str, Any]]:
    """Rows of an input example: a JSON object (one row), a JSON list of row objects, or a
    CSV file with a header (read with pandas when installed, as training data usually is)."""
    if not path.is_file():
        raise UsageError(f"example file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return _read_csv_example(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read example file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"example file {path} is not valid JSON: {exc}") from None
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UsageError(
            f"example file {path} must hold a JSON object for one row, or a list of row objects"
        )
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is not None and not isinstance(value, bool | int | float | str):
                raise UsageError(
                    f"example file {path}: row {i}, column '{key}' holds a "
                    f"{type(value).__name__}; a value is a number, string, boolean or null"
                )
    return rows


def _read_csv_example(path: Path) -> list[dict[str, Any]]:
    try:
        import pandas
    except ImportError:
        pandas = None
    try:
        if pandas is not None:
            frame = pandas.read_csv(path)
            rows: list[dict[str, Any]] = [
                {k: (None if _is_missing(v) else introspect.to_label(v)) for k, v in r.items()}
                for r in frame.to_dict(orient="records")
            ]
        else:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                rows = [{k: guess_cell(v or "") for k, v in r.items()} for r in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise UsageError(f"cannot read example file {path}: {exc}") from None
    if not rows:
        raise UsageError(f"example file {path} has no rows")
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------- checking
class Signature:
    """Checks values against a typed signature and builds the DataFrame a model takes."""

    def __init__(self, columns: Sequence[ColumnSpec], *, dataframe: bool) -> None:
        self.columns = list(columns)
        self.names = [c.name for c in self.columns]
        self.dataframe = dataframe
        self._allowed = [
            frozenset(c.categories) if c.dtype == "category" and c.categories else None
            for c in self.columns
        ]
        self._pandas: Any = None
        if dataframe:
            self._pandas = import_pandas("this model (fitted on a pandas DataFrame)")

    def check(self, values: Sequence[Any], field: str) -> list[Any]:
        """Values in column order, each checked against its column's type (None: missing)."""
        out: list[Any] = []
        for spec, allowed, value in zip(self.columns, self._allowed, values, strict=True):
            if value is None:
                out.append(None)
                continue
            out.append(self._one(spec, allowed, value, field))
        return out

    @staticmethod
    def _wrong(spec: ColumnSpec, value: Any, field: str) -> InvalidInputError:
        return InvalidInputError(
            f"'{field}.{spec.name}' must be {_EXPECTED[spec.dtype]} "
            f"({spec.dtype} column), not {value!r:.40}"
        )

    def _one(self, spec: ColumnSpec, allowed: frozenset[Any] | None, value: Any, field: str) -> Any:
        dtype = spec.dtype
        if dtype == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._wrong(spec, value, field)
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                raise InvalidInputError(f"'{field}.{spec.name}' must be finite") from None
            if math.isinf(number):
                raise InvalidInputError(f"'{field}.{spec.name}' must be finite")
            return number
        if dtype == "int":
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._wrong(spec, value, field)
            if not INT64_MIN <= value <= INT64_MAX:
                raise InvalidInputError(
                    f"'{field}.{spec.name}' is out of range for an int column (64 bits)"
                )
            return value
        if dtype == "bool":
            if not isinstance(value, bool):
                raise self._wrong(spec, value, field)
            return value
        if dtype == "str":
            if not isinstance(value, str):
                raise self._wrong(spec, value, field)
            return value
        # category: one of the values seen (a category the model never saw has no code)
        if allowed is not None and value not in allowed:
            shown = ", ".join(repr(c) for c in (spec.categories or [])[:10])
            more = "" if len(spec.categories or []) <= 10 else ", ..."
            raise InvalidInputError(
                f"'{field}.{spec.name}' must be one of {shown}{more} (category column), "
                f"not {value!r:.40}"
            )
        return value

    def parse_cell(self, index: int, text: str, where: str) -> Any:
        """A CSV cell of column `index` as its typed value (empty: missing)."""
        spec = self.columns[index]
        stripped = text.strip()
        if not stripped and spec.dtype != "str":
            return None
        if spec.dtype == "str":
            return text if text else None
        if spec.dtype == "bool":
            lowered = stripped.lower()
            if lowered in _TRUE or lowered in _FALSE:
                return lowered in _TRUE
            raise InvalidInputError(f"{where}, column '{spec.name}': {text!r:.40} is not a boolean")
        if spec.dtype == "category":
            guess = guess_cell(stripped)
            allowed = self._allowed[index]
            if allowed is None or guess in allowed:
                return guess
            return stripped
        try:
            number = float(stripped)
        except ValueError:
            raise InvalidInputError(
                f"{where}, column '{spec.name}': {text!r:.40} is not a number"
            ) from None
        if spec.dtype == "int" and number.is_integer():
            return int(number)
        return number

    def frame(self, rows: Sequence[Sequence[Any]]) -> Any:
        """One DataFrame for a batch of checked rows, with the recorded columns and types;
        missing values are NaN (as read_csv gives them)."""
        import numpy as np

        pd = self._pandas
        nan = math.nan
        data: dict[str, Any] = {}
        for j, spec in enumerate(self.columns):
            values = [row[j] for row in rows]
            has_missing = any(v is None for v in values)
            dtype = spec.dtype
            if dtype == "float" or (dtype == "int" and has_missing):
                data[spec.name] = np.array(
                    [nan if v is None else v for v in values], dtype=np.float64
                )
            elif dtype == "int":
                data[spec.name] = np.array(values, dtype=np.int64)
            elif dtype == "bool" and not has_missing:
                data[spec.name] = np.array(values, dtype=bool)
            elif dtype == "category":
                data[spec.name] = pd.Categorical(
                    [nan if v is None else v for v in values], categories=spec.categories
                )
            else:
                column = np.empty(len(values), dtype=object)
                column[:] = [nan if v is None else v for v in values]
                data[spec.name] = column
        return pd.DataFrame(data, copy=False)
