"""Fit and evaluate models on a CSV or a bundled sample: the estimator and its real metrics."""

from __future__ import annotations

import csv
import importlib.resources
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlserve.errors import DataError, UsageError
from mlserve.runtime.introspect import to_label
from mlserve.schemas import ColumnSpec, Label, ModelMetadata, TaskKind

if TYPE_CHECKING:
    from mlserve.registry import Registry

SAMPLES = ("sentiment", "iris")
TRAINABLE: tuple[TaskKind, ...] = (
    "text-classification",
    "tabular-classification",
    "tabular-regression",
)
MAX_REGRESSION_CLASS_GUESS = 20
CONFIDENCE_BINS = 10

Progress = Callable[[str], None]


@dataclass(slots=True)
class Dataset:
    """Inputs and targets ready for fitting: texts, numeric rows with feature names, or a
    pandas DataFrame of typed columns (a mixed table; `text_column` is one of its columns)."""

    kind: Literal["text", "tabular"]
    target: list[Any]
    texts: list[str] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    source: str = ""
    dropped_rows: int = 0
    target_column: str = ""  # the CSV column of `target`, for messages
    frame: Any = None
    text_column: str | None = None

    @property
    def target_name(self) -> str:
        return f"target column '{self.target_column}'" if self.target_column else "the target"

    def __len__(self) -> int:
        return len(self.target)


@dataclass(slots=True)
class TrainResult:
    estimator: Any
    task: TaskKind
    metrics: dict[str, Any]
    training: dict[str, Any]
    feature_names: list[str] | None
    n_train: int
    n_test: int
    columns: list[ColumnSpec] | None = None  # the typed signature of a DataFrame model


def sample_path(name: str) -> Path:
    return Path(str(importlib.resources.files("mlserve.samples") / f"{name}.csv"))


def load_sample(name: str) -> Dataset:
    """A bundled dataset: the sentiment corpus, or scikit-learn's iris."""
    if name == "sentiment":
        return read_csv(sample_path("sentiment"), target="label", text_column="text")
    if name == "iris":
        from sklearn.datasets import load_iris

        iris = load_iris()
        names = [str(n) for n in iris.target_names]
        return Dataset(
            kind="tabular",
            target=[names[int(i)] for i in iris.target],
            rows=[[float(v) for v in row] for row in iris.data],
            feature_names=[
                str(n).replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names
            ],
            source="scikit-learn iris",
        )
    raise DataError(f"unknown sample '{name}': choose one of {', '.join(SAMPLES)}")


def _open_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError:
        raise DataError(f"data file {path} is not UTF-8 text (is it a CSV file?)") from None
    except csv.Error as exc:
        raise DataError(f"data file {path} is not readable CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if not header:
        raise DataError(f"data file {path} is empty")
    if not rows:
        raise DataError(f"data file {path} has a header but no rows")
    if any(None in row for row in rows):
        line = next(i for i, row in enumerate(rows, start=2) if None in row)
        raise DataError(f"data file {path}: row {line} has more fields than the header")
    return header, rows


def read_csv(
    path: Path | str,
    *,
    target: str,
    text_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
) -> Dataset:
    """Read a CSV for training: text (`text_column`) or numeric feature columns."""
    _check_distinct(target, text_column)
    path = Path(path).expanduser()
    header, rows = _open_rows(path)
    _check_header(path, header, target=target, text_column=text_column)
    return _rows_dataset(
        path, header, rows, target=target, text_column=text_column, feature_columns=feature_columns
    )


def load_csv(
    path: Path | str,
    *,
    target: str,
    text_column: str | None = None,
    drop: Sequence[str] = (),
    task: TaskKind | None = None,
) -> Dataset:
    """Read a CSV as what it holds: a text column alone, numeric columns (a float matrix,
    without pandas), or a mixed table (a pandas DataFrame): string or boolean feature columns,
    or a text column next to other features (`task` text-classification: the text alone).
    `drop` removes columns (leaks, identifiers)."""
    from mlserve.training_tables import plan_columns, read_table

    _check_distinct(target, text_column)
    path = Path(path).expanduser()
    header, rows = _open_rows(path)
    _check_header(path, header, target=target, text_column=text_column)
    columns, mixed = plan_columns(
        path, header, rows, target=target, text_column=text_column, drop=drop, task=task
    )
    if not mixed:
        numeric = None if text_column is not None else columns
        return _rows_dataset(
            path, header, rows, target=target, text_column=text_column, feature_columns=numeric
        )
    table = read_table(path, target=target, features=columns)
    return Dataset(
        kind="tabular",
        target=table.target,
        feature_names=columns,
        source=str(path),
        dropped_rows=table.dropped_rows,
        target_column=target,
        frame=table.frame,
        text_column=text_column,
    )


def _check_distinct(target: str, text_column: str | None) -> None:
    if text_column is not None and text_column == target:
        raise UsageError(
            f"--target and --text-column both name column '{target}': the target is the "
            "column of labels to predict, the text column the text to learn them from; "
            "give two different columns"
        )


def _check_header(path: Path, header: list[str], *, target: str, text_column: str | None) -> None:
    available = ", ".join(header)
    if target not in header:
        raise DataError(f"target column '{target}' is not in {path} (columns: {available})")
    if text_column is not None and text_column not in header:
        raise DataError(f"text column '{text_column}' is not in {path} (columns: {available})")


def _rows_dataset(
    path: Path,
    header: list[str],
    rows: list[dict[str, str]],
    *,
    target: str,
    text_column: str | None,
    feature_columns: Sequence[str] | None,
) -> Dataset:
    available = ", ".join(header)
    dropped = 0
    if text_column is not None:
        texts, labels = [], []
        for row in rows:
            text, label = (row[text_column] or "").strip(), (row[target] or "").strip()
            if not text or not label:
                dropped += 1
                continue
            texts.append(text)
            labels.append(label)
        return Dataset(
            kind="text",
            target=labels,
            texts=texts,
            source=str(path),
            dropped_rows=dropped,
            target_column=target,
        )

    features = (
        list(feature_columns) if feature_columns is not None else [c for c in header if c != target]
    )
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(
            f"feature column(s) {', '.join(missing)} not in {path} (columns: {available})"
        )
    if not features:
        raise DataError(f"{path} has no feature columns besides the target '{target}'")
    numeric_rows: list[list[float]] = []
    labels = []
    for line, row in enumerate(rows, start=2):
        label = (row[target] or "").strip()
        if not label:
            dropped += 1
            continue
        values = []
        for col in features:
            raw = (row[col] or "").strip()
            if raw == "":
                values.append(math.nan)  # missing value: the default models handle NaN
                continue
            try:
                values.append(float(raw))
            except ValueError:
                raise DataError(
                    f"{path} row {line}: column '{col}' holds '{raw[:40]}', not a number; "
                    "tabular features must be numeric (for text use --text-column)"
                ) from None
        numeric_rows.append(values)
        labels.append(label)
    return Dataset(
        kind="tabular",
        target=labels,
        rows=numeric_rows,
        feature_names=features,
        source=str(path),
        dropped_rows=dropped,
        target_column=target,
    )


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _numeric_values(target: Sequence[Any]) -> set[float] | None:
    """The distinct numbers of a target that holds only numbers; None otherwise."""
    numbers = [_as_number(v) for v in target]
    if any(n is None or math.isnan(n) for n in numbers):
        return None
    return {n for n in numbers if n is not None}


def choose_task(dataset: Dataset) -> TaskKind:
    """Text → classification; tabular → regression only for a numeric target with many values."""
    if dataset.kind == "text":
        return "text-classification"
    distinct = _numeric_values(dataset.target)
    if distinct is None:
        return "tabular-classification"
    integral = all(n.is_integer() for n in distinct)
    if integral and len(distinct) <= MAX_REGRESSION_CLASS_GUESS:
        return "tabular-classification"
    return "tabular-regression"


def _short(value: Any, limit: int = 30) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _examples(values: Sequence[Any], n: int = 3) -> str:
    return ", ".join(_short(v) for v in list(dict.fromkeys(values))[:n])


def _check_text_target(dataset: Dataset) -> None:
    """A text model classifies: a target of fractional numbers (a rating, a score) has no
    classes to learn, and mlserve trains no text regression."""
    distinct = _numeric_values(dataset.target)
    if distinct is None or all(n.is_integer() for n in distinct):
        return
    hint = "; or --task tabular-regression to regress on all the columns"
    raise DataError(
        f"{dataset.target_name} holds continuous numbers ({len(distinct)} distinct values, "
        f"e.g. {_examples(dataset.target)}): a text model predicts classes and mlserve has "
        "no text regression; give --target a column of labels (or bin the numbers into "
        f"classes){hint if dataset.frame is not None else ''}"
    )


def build_estimator(task: TaskKind, seed: int) -> Any:
    """The default model for a task."""
    if task == "text-classification":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        return Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
                ("clf", LogisticRegression(max_iter=2000, C=10.0, random_state=seed)),
            ]
        )
    if task == "tabular-classification":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=seed)


def _coerce_target(dataset: Dataset, task: TaskKind) -> list[Any]:
    if task == "tabular-regression":
        values = [_as_number(v) for v in dataset.target]
        bad = next((v for v, n in zip(dataset.target, values, strict=True) if n is None), None)
        if bad is not None:
            raise DataError(f"regression target holds '{bad}', not a number")
        return values
    numbers = [_as_number(v) for v in dataset.target]
    if all(n is not None and n.is_integer() for n in numbers):
        return [int(n) for n in numbers if n is not None]  # integer class labels stay integers
    return [str(v) for v in dataset.target]


def _check_classes(y: Sequence[Any], test_size: float, *, target: str = "the target") -> None:
    counts = Counter(y)
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise DataError(
            f"{target} has a single class ('{_short(only)}'); need at least two to classify"
        )
    rare = sorted((str(c) for c, n in counts.items() if n < 2))
    if len(counts) > MAX_REGRESSION_CLASS_GUESS and len(rare) > len(counts) / 2:
        # Most values seen once: free text, ids or measurements, not labels.
        raise DataError(
            f"{target} has {len(counts)} distinct values in {len(y)} rows, most of them once "
            f"(e.g. {_examples(rare)}): that is not a column of classes; give --target the "
            "column of labels to predict"
        )
    if rare:
        raise DataError(
            f"class(es) {', '.join(_short(c) for c in rare[:5])} have a single example; "
            "each class needs at least two for a stratified hold-out split"
        )
    n_test = math.ceil(len(y) * test_size)
    if n_test < len(counts) or len(y) - n_test < len(counts):
        raise DataError(
            f"{len(y)} rows are too few for {len(counts)} classes with --test-size {test_size}"
        )


def _classification_metrics(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: list[Any]
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class": {
            str(label): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
    }


def holdout_profile(estimator: Any, x_test: Any, classes: list[Label]) -> dict[str, Any]:
    """What drift checks compare live traffic with: predicted-class shares and confidences."""
    import numpy as np

    profile: dict[str, Any] = {}
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(x_test))
        predicted = proba.argmax(axis=1)
        confidence = proba.max(axis=1)
        counts = np.bincount(predicted, minlength=len(classes))
        hist, edges = np.histogram(confidence, bins=CONFIDENCE_BINS, range=(0.0, 1.0))
        profile["confidence_histogram"] = {
            "edges": [float(e) for e in edges],
            "fractions": [float(h) / len(confidence) for h in hist],
        }
        profile["mean_confidence"] = float(confidence.mean())
    else:
        pred = list(estimator.predict(x_test))
        counted = Counter(str(p) for p in pred)
        counts = np.array([counted.get(str(c), 0) for c in classes])
    total = int(counts.sum())
    profile["predicted_class_distribution"] = {
        str(c): float(n) / total for c, n in zip(classes, counts, strict=True)
    }
    return profile


def train(
    dataset: Dataset,
    *,
    test_size: float = 0.2,
    seed: int = 42,
    task: TaskKind | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Split, fit on the training part, evaluate on the held-out part."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    def step(message: str) -> None:
        if progress is not None:
            progress(message)

    if not 0.0 < test_size < 1.0:
        raise DataError(f"--test-size must be between 0 and 1 (got {test_size})")
    if len(dataset) < 4:
        raise DataError(f"{dataset.source or 'the data'} has {len(dataset)} usable rows; need more")
    if task is None and (dataset.kind == "text" or dataset.text_column):
        # A text column makes classes by default; an explicit --task takes the target as is.
        _check_text_target(dataset)
    task = task or choose_task(dataset)
    if task not in TRAINABLE:
        raise UsageError(f"mlserve train fits {', '.join(TRAINABLE)} models, not {task}")
    if dataset.kind == "text" and task != "text-classification":
        raise DataError("text data can only train a text-classification model")
    if dataset.kind == "tabular" and task == "text-classification":
        raise DataError("a text-classification model needs --text-column (the column of text)")
    y = _coerce_target(dataset, task)
    classify = task != "tabular-regression"
    if classify:
        _check_classes(y, test_size, target=dataset.target_name)
    x: Any = dataset.texts if dataset.kind == "text" else dataset.frame
    if x is None:
        x = np.asarray(dataset.rows, dtype=float)

    step("splitting")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y if classify else None
    )
    if dataset.frame is not None:
        from mlserve.runtime.signature import columns_from_frame
        from mlserve.training_tables import build_table_estimator

        columns = columns_from_frame(dataset.frame)  # all rows: blanks anywhere are nullable
        estimator = build_table_estimator(
            dataset.frame, task=task, text_column=dataset.text_column, seed=seed
        )
    else:
        columns, estimator = None, build_estimator(task, seed)
    step(f"fitting {type(estimator).__name__} on {len(y_train)} rows")
    estimator.fit(x_train, y_train)
    step(f"evaluating on {len(y_test)} held-out rows")
    y_pred = estimator.predict(x_test)

    metrics: dict[str, Any] = {
        "n_train": len(y_train),
        "n_test": len(y_test),
        "test_size": test_size,
        "seed": seed,
    }
    training: dict[str, Any] = {}
    if classify:
        labels = list(estimator.classes_)
        metrics.update(_classification_metrics(y_test, list(y_pred), labels))
        train_counts = Counter(y_train)
        training["class_distribution"] = {str(c): train_counts[c] / len(y_train) for c in labels}
        training.update(holdout_profile(estimator, x_test, [to_label(c) for c in labels]))
    else:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        metrics.update(
            {
                "r2": float(r2_score(y_test, y_pred)),
                "mae": float(mean_absolute_error(y_test, y_pred)),
                "rmse": float(math.sqrt(mean_squared_error(y_test, y_pred))),
            }
        )
    return TrainResult(
        estimator=estimator,
        task=task,
        metrics=metrics,
        training=training,
        feature_names=None if columns is not None else dataset.feature_names or None,
        n_train=len(y_train),
        n_test=len(y_test),
        columns=columns,
    )


@dataclass(frozen=True)
class Trained:
    """What `train_and_register` did: the fit, its registry entry, the rows it skipped."""

    result: TrainResult
    metadata: ModelMetadata | None
    dropped_rows: int


def train_and_register(
    registry: Registry | None,
    *,
    sample: str | None = None,
    data: Path | None = None,
    target: str | None = None,
    text_column: str | None = None,
    drop: Sequence[str] = (),
    name: str | None = None,
    aliases: list[str] | None = None,
    test_size: float = 0.2,
    seed: int = 42,
    task: TaskKind | None = None,
    output: Path | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Trained:
    """Load a sample or a CSV, train and evaluate, optionally write the estimator to `output`,
    and register it in `registry` (unless None) with its metrics and hold-out profile."""
    from mlserve.registry import dump_estimator, validate_alias, validate_name

    if (sample is None) == (data is None):
        raise UsageError("give either --sample NAME or --data FILE.csv (with --target COLUMN)")
    if data is not None and not target:
        raise UsageError("--data needs --target COLUMN (the column to predict)")
    if sample is not None and drop:
        raise UsageError("--drop applies to --data FILE.csv, not to a bundled sample")
    model_name = name or (sample if sample else Path(str(data)).stem)
    if registry is not None:
        validate_name(model_name)
        for a in aliases or []:
            validate_alias(a)

    def step(message: str) -> None:
        if progress is not None:
            progress(message)

    if sample is not None:
        dataset = load_sample(sample)
    else:
        assert data is not None and target is not None  # noqa: S101 - checked above
        dataset = load_csv(data, target=target, text_column=text_column, drop=drop, task=task)
    result = train(dataset, test_size=test_size, seed=seed, task=task, progress=progress)
    if output is not None:
        step(f"writing {output}")
        try:
            output.write_bytes(dump_estimator(result.estimator))
        except OSError as exc:
            raise UsageError(f"cannot write --output {output}: {exc.strerror}") from None
    meta = None
    if registry is not None:
        step("registering")
        meta = registry.register_estimator(
            result.estimator,
            name=model_name,
            aliases=aliases or [],
            description=description or f"trained by mlserve on {dataset.source}",
            tags=tags or {},
            metrics=result.metrics,
            training=result.training,
            source=f"mlserve train ({dataset.source})",
            task=result.task,
            feature_names=result.feature_names,
            columns=result.columns,
        )
    return Trained(result=result, metadata=meta, dropped_rows=dataset.dropped_rows)
