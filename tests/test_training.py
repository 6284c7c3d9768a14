"""Reading training data, choosing the task, fitting and evaluating on a hold-out split."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from mlserve import training
from mlserve.errors import DataError
from mlserve.training import Dataset


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def text_rows(n_per_class: int = 6) -> list[list[str]]:
    good = ["lovely", "great", "superb", "excellent", "wonderful", "delightful", "fine", "nice"]
    bad = ["awful", "terrible", "dreadful", "horrible", "poor", "broken", "sad", "bleak"]
    rows = [["text", "label"]]
    for i in range(n_per_class):
        rows.append([f"a {good[i]} day", "pos"])
        rows.append([f"a {bad[i]} day", "neg"])
    return rows


# ---------------------------------------------------------------- reading CSV


def test_read_csv_keeps_quoted_fields_embedded_newlines_and_non_ascii(tmp_path: Path) -> None:
    path = tmp_path / "tricky.csv"
    path.write_text(
        "text,label\n"
        '"Grüße, und ""Danke"" — sehr gut",pos\n'
        '"line one\nline two, still one field",neg\n'
        "日本語のテキスト 🙂,pos\n",
        encoding="utf-8",
    )
    data = training.read_csv(path, target="label", text_column="text")
    assert data.kind == "text"
    assert data.texts == [
        'Grüße, und "Danke" — sehr gut',
        "line one\nline two, still one field",
        "日本語のテキスト 🙂",
    ]
    assert data.target == ["pos", "neg", "pos"]


def test_read_csv_ignores_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nhello,pos\n".encode("utf-8-sig"))
    data = training.read_csv(path, target="label", text_column="text")
    assert data.texts == ["hello"]


def test_read_csv_skips_rows_with_empty_text_or_label(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "gaps.csv",
        [["text", "label"], ["fine", "pos"], ["", "neg"], ["bad", ""], ["ok", "neg"]],
    )
    data = training.read_csv(path, target="label", text_column="text")
    assert data.texts == ["fine", "ok"]
    assert data.dropped_rows == 2


def test_read_csv_tabular_parses_numbers_and_marks_missing_values(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [["a", "label", "b"], ["1.5", "x", "2"], ["", "y", "-3e2"]],
    )
    data = training.read_csv(path, target="label")
    assert data.kind == "tabular"
    assert data.feature_names == ["a", "b"]
    assert data.rows[0] == [1.5, 2.0]
    assert math.isnan(data.rows[1][0]) and data.rows[1][1] == -300.0
    assert data.target == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "kwargs", "fragment"),
    [
        (b"", {"target": "label"}, "is empty"),
        (b"text,label\n", {"target": "label"}, "has a header but no rows"),
        (b"text,label\nhi,pos\n", {"target": "sentiment"}, "target column 'sentiment' is not in"),
        (
            b"body,label\nhi,pos\n",
            {"target": "label", "text_column": "text"},
            "text column 'text' is not in",
        ),
        (b"f1,label\n1,a\n2,b,3\n", {"target": "label"}, "row 3 has more fields than the header"),
        (b"f1,label\n1,a\nabc,b\n", {"target": "label"}, "column 'f1' holds 'abc', not a number"),
        (b"label\na\nb\n", {"target": "label"}, "no feature columns"),
        (b"\xff\xfe\x00t\x00,\x00l\x00\n", {"target": "l"}, "is not UTF-8 text"),
        (b"caf\xe9,label\nx,y\n", {"target": "label"}, "is not UTF-8 text"),
    ],
    ids=[
        "empty",
        "header-only",
        "missing-target",
        "missing-text-column",
        "ragged-row",
        "non-numeric-feature",
        "no-features",
        "utf16",
        "latin1",
    ],
)
def test_read_csv_refuses_bad_data_with_a_clear_error(
    tmp_path: Path, content: bytes, kwargs: dict[str, Any], fragment: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=fragment) as info:
        training.read_csv(path, **kwargs)
    assert str(path) in info.value.message
    assert info.value.exit_code == 2


def test_read_csv_refuses_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        training.read_csv(tmp_path / "nope.csv", target="label")
    with pytest.raises(DataError, match="is a directory"):
        training.read_csv(tmp_path, target="label")


def test_read_csv_refuses_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not UTF-8"):
        training.read_csv(path, target="label")


# ---------------------------------------------------------------- choosing the task


@pytest.mark.parametrize(
    ("dataset", "task"),
    [
        (Dataset(kind="text", target=["1.5", "2.5"]), "text-classification"),
        (Dataset(kind="tabular", target=["cat", "dog"]), "tabular-classification"),
        (Dataset(kind="tabular", target=["0", "1", "2", "1"]), "tabular-classification"),
        (Dataset(kind="tabular", target=["0.5", "1.25", "2"]), "tabular-regression"),
        (Dataset(kind="tabular", target=[str(i) for i in range(50)]), "tabular-regression"),
        (Dataset(kind="tabular", target=["1", "2", "nan"]), "tabular-classification"),
    ],
    ids=["text", "strings", "few-integers", "floats", "many-integers", "nan"],
)
def test_choose_task_from_the_target(dataset: Dataset, task: str) -> None:
    assert training.choose_task(dataset) == task


# ---------------------------------------------------------------- training


def test_train_refuses_a_single_class(tmp_path: Path) -> None:
    rows = [["text", "label"]] + [[f"text number {i}", "pos"] for i in range(10)]
    data = training.read_csv(
        write_csv(tmp_path / "one.csv", rows), target="label", text_column="text"
    )
    with pytest.raises(DataError, match="single class \\('pos'\\)"):
        training.train(data)


def test_train_refuses_a_class_with_one_example(tmp_path: Path) -> None:
    rows = text_rows() + [["a lone neutral day", "neutral"]]
    data = training.read_csv(
        write_csv(tmp_path / "rare.csv", rows), target="label", text_column="text"
    )
    with pytest.raises(DataError, match="neutral have a single example"):
        training.train(data)


def test_train_refuses_too_few_rows() -> None:
    data = Dataset(kind="text", target=["a", "b", "a"], texts=["x", "y", "z"])
    with pytest.raises(DataError, match="3 usable rows"):
        training.train(data)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, 1.5])
def test_train_refuses_test_size_outside_zero_and_one(test_size: float) -> None:
    data = Dataset(kind="text", target=["a", "b"] * 5, texts=["x", "y"] * 5)
    with pytest.raises(DataError, match="--test-size"):
        training.train(data, test_size=test_size)


def test_train_refuses_too_few_rows_for_the_split() -> None:
    data = Dataset(kind="text", target=["a", "b", "c"] * 2, texts=["x"] * 6)
    with pytest.raises(DataError, match="too few for 3 classes"):
        training.train(data, test_size=0.2)


def test_train_refuses_text_regression() -> None:
    data = Dataset(kind="text", target=["1", "2"] * 5, texts=["x", "y"] * 5)
    with pytest.raises(DataError, match="text-classification"):
        training.train(data, task="tabular-regression")


def test_train_refuses_text_task_for_tabular_data() -> None:
    data = Dataset(kind="tabular", target=["a", "b"] * 5, rows=[[1.0], [2.0]] * 5)
    with pytest.raises(DataError, match="needs --text-column"):
        training.train(data, task="text-classification")


def test_train_text_classifier_on_a_tricky_csv(tmp_path: Path) -> None:
    rows = text_rows()
    rows[1][0] = 'a "lovely", quoted\nmulti-line day — schön'
    data = training.read_csv(
        write_csv(tmp_path / "t.csv", rows), target="label", text_column="text"
    )
    steps: list[str] = []
    result = training.train(data, test_size=0.34, progress=steps.append)
    assert result.task == "text-classification"
    assert result.n_train + result.n_test == 12
    assert result.metrics["per_class"].keys() == {"neg", "pos"}
    assert [s.split()[0] for s in steps] == ["splitting", "fitting", "evaluating"]
    assert list(result.estimator.predict(["a superb day"])) == ["pos"]


def test_train_iris_reports_real_hold_out_metrics() -> None:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    data = training.load_sample("iris")
    result = training.train(data, test_size=0.2, seed=7)
    m = result.metrics
    assert result.task == "tabular-classification"
    assert (m["n_train"], m["n_test"]) == (120, 30)
    assert result.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    # stratified: each of the three balanced classes gets the same share of the hold-out
    assert {c: row["support"] for c, row in m["per_class"].items()} == {
        "setosa": 10,
        "versicolor": 10,
        "virginica": 10,
    }
    # the stored figures are what the returned estimator scores on the same split
    _, x_test, _, y_test = train_test_split(
        data.rows, data.target, test_size=0.2, random_state=7, stratify=data.target
    )
    predicted = result.estimator.predict(x_test)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_test, predicted))
    assert m["macro_f1"] == pytest.approx(f1_score(y_test, predicted, average="macro"))
    assert 0.8 <= m["accuracy"] <= 1.0
    shares = result.training["class_distribution"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert sum(result.training["predicted_class_distribution"].values()) == pytest.approx(1.0)


def test_train_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", text_rows(8))
    data = training.read_csv(path, target="label", text_column="text")
    first = training.train(data, seed=3, test_size=0.25)
    again = training.train(data, seed=3, test_size=0.25)
    assert again.metrics == first.metrics
    assert again.training == first.training


def test_train_regression_reports_r2_and_errors() -> None:
    rows = [[float(i), float(i % 7)] for i in range(80)]
    target = [str(2.5 * r[0] + 0.5 * r[1]) for r in rows]
    data = Dataset(kind="tabular", target=target, rows=rows, feature_names=["a", "b"])
    result = training.train(data)
    assert result.task == "tabular-regression"
    assert {"r2", "mae", "rmse"} <= result.metrics.keys()
    assert "accuracy" not in result.metrics
    assert result.metrics["r2"] > 0.9
    assert result.metrics["mae"] >= 0


def test_train_refuses_non_numeric_regression_target() -> None:
    data = Dataset(kind="tabular", target=["1.5", "x"] * 5, rows=[[1.0]] * 10, feature_names=["a"])
    with pytest.raises(DataError, match="regression target holds 'x'"):
        training.train(data, task="tabular-regression")


def test_unknown_sample_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown sample 'mnist'"):
        training.load_sample("mnist")


# ---------------------------------------------------------------- the bundled sentiment corpus
# sample_models/sentiment.csv is written by another engineer; these tests pin the bar.


def test_sentiment_corpus_has_enough_varied_labelled_sentences() -> None:
    data = training.load_sample("sentiment")
    assert data.kind == "text"
    assert set(data.target) == {"positive", "negative", "neutral"}
    assert len(data) >= 900
    assert data.dropped_rows == 0
    normalised = [" ".join(t.lower().split()) for t in data.texts]
    assert len(set(normalised)) == len(normalised), "duplicate sentences in the corpus"


@pytest.mark.slow
def test_sentiment_model_reaches_macro_f1_of_0_80_on_its_hold_out() -> None:
    result = training.train(training.load_sample("sentiment"))
    assert result.task == "text-classification"
    assert result.metrics["macro_f1"] >= 0.80
    assert set(result.metrics["per_class"]) == {"positive", "negative", "neutral"}
