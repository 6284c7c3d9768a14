"""Typed signatures: per-column checks, CSV cells, categories, and the one-line error naming the
pandas extra when a DataFrame model meets a host without pandas."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from mlserve.errors import InvalidInputError, InvalidModelError
from mlserve.runtime.signature import PANDAS_HINT, Signature, example_row, infer_columns
from mlserve.schemas import ColumnSpec

pd = pytest.importorskip("pandas")

COLUMNS = [
    ColumnSpec(name="size", dtype="category", categories=["S", "M", "L"]),
    ColumnSpec(name="count", dtype="int"),
    ColumnSpec(name="ok", dtype="bool", nullable=True),
    ColumnSpec(name="note", dtype="str"),
    ColumnSpec(name="price", dtype="float"),
]


@pytest.fixture
def signature() -> Signature:
    return Signature(COLUMNS, dataframe=True)


def test_values_are_checked_per_column(signature: Signature) -> None:
    assert signature.check(["M", 3, None, "hi", 2], "features") == ["M", 3, None, "hi", 2.0]
    assert signature.check(["L", 4.0, True, "x", 1.5], "features")[1] == 4  # 4.0 is an integer
    with pytest.raises(InvalidInputError, match=r"'row.size' must be one of 'S', 'M', 'L'"):
        signature.check(["XL", 1, True, "x", 1.0], "row")
    with pytest.raises(InvalidInputError, match="out of range for an int column"):
        signature.check(["S", 2**70, True, "x", 1.0], "row")
    with pytest.raises(InvalidInputError, match=r"'row.price' must be finite"):
        signature.check(["S", 1, True, "x", 10**400], "row")


def test_csv_cells_are_typed_by_their_column(signature: Signature) -> None:
    cells = ["M", "7", "yes", "007", "2.50"]
    values = [signature.parse_cell(j, c, "line 2") for j, c in enumerate(cells)]
    assert values == ["M", 7, True, "007", 2.5]  # a str column of digits stays a string
    assert signature.parse_cell(4, " ", "line 2") is None  # an empty cell is missing
    with pytest.raises(InvalidInputError, match="line 3, column 'ok': 'maybe' is not a boolean"):
        signature.parse_cell(2, "maybe", "line 3")


def test_the_frame_has_the_recorded_types(signature: Signature) -> None:
    frame = signature.frame([["M", 3, None, "hi", 2.0], ["S", 1, True, None, None]])
    assert list(frame.columns) == ["size", "count", "ok", "note", "price"]
    assert list(frame["size"].cat.categories) == ["S", "M", "L"]
    assert str(frame["count"].dtype) == "int64"
    assert str(frame["price"].dtype) == "float64"
    assert frame["note"].isna().tolist() == [False, True]
    assert frame["ok"].isna().tolist() == [True, False]


def test_a_row_built_from_the_signature_passes_its_checks(signature: Signature) -> None:
    row = example_row(COLUMNS)
    assert signature.check([row[c.name] for c in COLUMNS], "example") == [
        "S", 0, False, "mlserve", 0.0,
    ]  # fmt: skip


def test_a_plain_estimator_on_a_dataframe_takes_numbers() -> None:
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 0.9]})
    model = LinearRegression().fit(frame, [1.0, 2.0, 3.0])
    columns, notes = infer_columns(model, ["a", "b"])
    assert [(c.name, c.dtype) for c in columns] == [("a", "float"), ("b", "float")]
    assert notes == []


def test_without_pandas_a_dataframe_model_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
    tmp_path: Path,
    save_joblib: Any,
    assert_user_error: Callable[..., None],
) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    path = save_joblib(LogisticRegression().fit(frame, [0, 1, 0, 1]), tmp_path / "m.joblib")
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails

    with pytest.raises(InvalidModelError, match="needs pandas"):
        Signature(COLUMNS, dataframe=True)
    assert_user_error(cli("register", path, "--name", "m"), PANDAS_HINT)
