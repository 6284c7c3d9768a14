"""Mixed tables for `mlserve train`: which CSVs need a DataFrame model, reading them with pandas
and the ColumnTransformer pipeline fitted on them.

Only sklearn's own classes (and numpy functions) go into the pipeline, so a model written with
`--output` loads wherever scikit-learn does, without mlserve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlserve.errors import DataError, InvalidModelError, UsageError
from mlserve.runtime.signature import import_pandas
from mlserve.schemas import TaskKind

__all__ = ["Table", "build_table_estimator", "non_numeric_columns", "plan_columns", "read_table"]

WHY_PANDAS = "training on a table with string or boolean columns"
MAX_ONE_HOT = 64  # more distinct values than this in a column: the rarest share one column


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV read with pandas: the feature DataFrame, the target as written, rows skipped."""

    frame: Any
    target: list[str]
    dropped_rows: int


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def non_numeric_columns(
    rows: Sequence[Mapping[str, str | None]], columns: Sequence[str]
) -> list[str]:
    """The columns holding a value that is not a number (blanks are missing values)."""
    out = []
    for col in columns:
        for row in rows:
            raw = (row.get(col) or "").strip()
            if raw and not _is_number(raw):
                out.append(col)
                break
    return out


def plan_columns(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Mapping[str, str | None]],
    *,
    target: str,
    text_column: str | None,
    drop: Sequence[str],
    task: TaskKind | None,
) -> tuple[list[str], bool]:
    """The feature columns of a CSV (in the file's order, without the target and `drop`), and
    whether they make a mixed table: a string or boolean column, or a text column with others
    (unless `task` is text-classification: the text alone). Without a table, the text column
    is not among them."""
    for col in drop:
        if col in (target, text_column):
            role = "target" if col == target else "text column"
            raise UsageError(f"--drop names the {role} '{col}': drop other columns")
        if col not in header:
            available = ", ".join(header)
            raise DataError(f"--drop column '{col}' is not in {path} (columns: {available})")
    others = [c for c in header if c not in (target, text_column) and c not in drop]
    if text_column is not None:
        if others and task != "text-classification":
            return [c for c in header if c == text_column or c in others], True
        return others, False
    return others, bool(non_numeric_columns(rows, others))


def _pandas() -> Any:
    try:
        return import_pandas(WHY_PANDAS)
    except InvalidModelError as exc:  # bad data for the CLI (exit 2), not a bad model file
        raise DataError(exc.message) from None


def read_table(path: Path, *, target: str, features: Sequence[str]) -> Table:
    """The feature columns as pandas types them (int, float, bool, str; blanks are NaN) and the
    target as written; rows with an empty target are skipped."""
    pd = _pandas()
    try:
        raw = pd.read_csv(
            path, usecols=[*features, target], dtype={target: str}, encoding="utf-8-sig"
        )
    except (ValueError, OSError) as exc:  # pandas' ParserError is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data file {path} is not readable CSV: {first}") from None
    labels = raw[target].fillna("").astype(str).str.strip()
    keep = (labels != "").to_numpy()
    frame = raw.loc[keep, list(features)].reset_index(drop=True)
    return Table(
        frame=frame,
        target=labels[keep].tolist(),
        dropped_rows=int((~keep).sum()),
    )


def _as_objects() -> Any:
    """Strings and booleans as one object array whatever pandas or the server gave (bool,
    str or object columns; missing values NaN): what SimpleImputer and OneHotEncoder take."""
    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(
        np.asarray, kw_args={"dtype": object}, feature_names_out="one-to-one"
    )


def _column_kinds(frame: Any, text_column: str | None) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns; the text column is in neither."""
    from pandas.api import types as pdt

    numeric, categorical = [], []
    for name in frame.columns:
        if name == text_column:
            continue
        dtype = frame[name].dtype
        if pdt.is_numeric_dtype(dtype) and not pdt.is_bool_dtype(dtype):
            numeric.append(str(name))
        else:
            categorical.append(str(name))
    return numeric, categorical


def build_table_estimator(frame: Any, *, task: TaskKind, text_column: str | None, seed: int) -> Any:
    """`Pipeline(ColumnTransformer, estimator)` for a DataFrame: strings and booleans imputed
    (most frequent) and one-hot encoded (unknown values ignored); numbers passed to gradient
    boosting as they are (it takes NaN), or imputed (median) and scaled for the linear model
    that a text column (TF-IDF, sparse) needs."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric, categorical = _column_kinds(frame, text_column)
    linear = text_column is not None
    parts: list[tuple[str, Any, Any]] = []
    if numeric:
        if linear:
            scaled = Pipeline(
                [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
            )
            parts.append(("numeric", scaled, numeric))
        else:
            parts.append(("numeric", "passthrough", numeric))
    if categorical:
        encoded = Pipeline(
            [
                ("objects", _as_objects()),
                ("impute", SimpleImputer(strategy="most_frequent")),
                (
                    "onehot",
                    OneHotEncoder(
                        handle_unknown="ignore",
                        max_categories=MAX_ONE_HOT,
                        sparse_output=linear,
                    ),
                ),
            ]
        )
        parts.append(("categorical", encoded, categorical))
    if text_column is not None:
        text = Pipeline(
            [
                ("objects", _as_objects()),
                ("impute", SimpleImputer(strategy="constant", fill_value="")),
                ("flatten", FunctionTransformer(np.ravel)),  # TF-IDF takes one text per row
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ]
        )
        parts.append(("text", text, [text_column]))
    columns = ColumnTransformer(parts, remainder="drop")
    return Pipeline([("columns", columns), ("model", _final_estimator(task, linear, seed))])


def _final_estimator(task: TaskKind, linear: bool, seed: int) -> Any:
    regression = task == "tabular-regression"
    if linear:
        from sklearn.linear_model import LogisticRegression, Ridge

        if regression:
            return Ridge(alpha=1.0)
        return LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if regression:
        return HistGradientBoostingRegressor(random_state=seed)
    return HistGradientBoostingClassifier(random_state=seed)
