"""`mlserve register` records a typed signature (from --example, JSON or CSV, else inferred from
the model, saying what could not be) and refuses, before writing anything, a model that cannot
predict its example."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import Result

from mlserve.registry import Registry

pd = pytest.importorskip("pandas")


def _frame(n: int = 80) -> Any:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue"], n),
            "fragile": rng.choice([True, False], n),
            "items": rng.integers(1, 9, n),
            "weight": rng.normal(2.0, 0.5, n),
        }
    )
    frame.loc[::9, "weight"] = np.nan
    return frame


def _pipeline(custom_column: bool = False) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    numeric: Any = (
        FunctionTransformer(np.log1p, feature_names_out="one-to-one")
        if custom_column
        else "passthrough"
    )
    prep = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour", "fragile"]),
            ("items", numeric, ["items"]),
            ("weight", SimpleImputer(), ["weight"]),
        ]
    )
    frame = _frame()
    return make_pipeline(prep, LogisticRegression()).fit(frame, frame["items"] > 4)


def _columns(registry: Registry, name: str) -> dict[str, tuple[str, bool]]:
    meta = registry.metadata(name, registry.versions(name)[-1])
    columns = meta.input_schema.columns or []
    return {c.name: (c.dtype, c.nullable) for c in columns}


def test_a_csv_example_types_every_column(
    cli: Callable[..., Result], tmp_path: Path, registry: Registry, save_joblib: Any
) -> None:
    model = save_joblib(_pipeline(), tmp_path / "parcels.joblib")
    example = tmp_path / "example.csv"
    _frame(6).to_csv(example, index=False)  # a gap in weight (row 0)

    result = cli("register", model, "--name", "parcels", "--example", example)

    assert result.exit_code == 0, result.stderr
    assert _columns(registry, "parcels") == {
        "colour": ("str", False),
        "fragile": ("bool", False),
        "items": ("int", False),
        "weight": ("float", True),
    }
    assert "inputs colour: str, fragile: bool, items: int, weight: float?" in result.stdout


def test_without_an_example_what_cannot_be_inferred_is_said(
    cli: Callable[..., Result], tmp_path: Path, registry: Registry, save_joblib: Any
) -> None:
    model = save_joblib(_pipeline(custom_column=True), tmp_path / "parcels.joblib")

    result = cli("register", model, "--name", "parcels")

    assert result.exit_code == 0, result.stderr
    columns = _columns(registry, "parcels")
    assert columns["colour"] == ("str", False)  # the encoder's categories are strings
    assert columns["weight"] == ("float", True)  # imputed: missing values are expected
    assert "could not infer the type of column(s) items" in " ".join(result.stdout.split())
    meta = registry.metadata("parcels", 1)
    assert meta.input_schema.notes and "items" in meta.input_schema.notes[0]


def test_an_example_missing_a_column_is_refused_and_nothing_is_written(
    cli: Callable[..., Result],
    tmp_path: Path,
    registry: Registry,
    save_joblib: Any,
    assert_user_error: Callable[..., None],
) -> None:
    model = save_joblib(_pipeline(), tmp_path / "parcels.joblib")
    example = tmp_path / "example.json"
    example.write_text(json.dumps([{"colour": "red", "fragile": True, "items": 2}]))

    result = cli("register", model, "--name", "parcels", "--example", example)

    assert_user_error(result, "cannot predict its example", "missing weight")
    assert registry.names() == []


def test_a_model_whose_predict_fails_is_refused_with_its_own_error(
    cli: Callable[..., Result],
    tmp_path: Path,
    registry: Registry,
    save_joblib: Any,
    assert_user_error: Callable[..., None],
) -> None:
    from sklearn.linear_model import LogisticRegression

    # Fitted on 3 features, told (by hand) it takes 4: predict fails inside scikit-learn.
    model = LogisticRegression().fit(np.eye(3), [0, 1, 0])
    model.n_features_in_ = 4
    path = save_joblib(model, tmp_path / "skewed.joblib")

    result = cli("register", path, "--name", "skewed")

    assert_user_error(result, "cannot predict a sample row", "ValueError", "--no-check")
    assert registry.names() == []


def test_invalid_example_files_are_usage_errors(
    cli: Callable[..., Result],
    tmp_path: Path,
    model_file: Path,
    registry: Registry,
    assert_user_error: Callable[..., None],
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert_user_error(
        cli("register", model_file, "--name", "m", "--example", bad), "a list of row objects"
    )
    assert_user_error(
        cli("register", model_file, "--name", "m", "--example", tmp_path / "none.json"),
        "does not exist",
    )
    assert registry.names() == []


def test_task_choices_include_every_detected_task(
    cli: Callable[..., Result], model_file: Path, assert_user_error: Callable[..., None]
) -> None:
    result = cli("register", model_file, "--name", "m", "--task", "ranking")
    assert_user_error(result, "anomaly-detection", "clustering", "tabular-multilabel")
