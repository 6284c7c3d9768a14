"""`mlserve train`: bad data is exit 2 with nothing registered; good data trains and registers."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from mlserve.registry import Registry


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def tricky_text_csv(path: Path) -> Path:
    """Quoted fields, embedded newlines, commas, doubled quotes and non-ASCII text."""
    good = [
        "Très bien",
        "Wunderbar, wirklich",
        'A "great" day',
        "とても良い",
        "Superb\nservice",
        "Loved it",
    ]
    bad = [
        "Très mal",
        "Schrecklich, wirklich",
        'An "awful" day',
        "とても悪い",
        "Rude\nstaff",
        "Hated it",
    ]
    rows = [["text", "label"]]
    for g, b in zip(good, bad, strict=True):
        rows += [[g, "positive"], [b, "negative"]]
    return write_csv(path, rows)


@pytest.fixture
def bad_data(tmp_path: Path) -> dict[str, tuple[Path, list[str], str]]:
    """case -> (file, extra args, message fragment)."""
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\ncafé crème,positive\n".encode("latin-1"))
    text_args = ["--target", "label", "--text-column", "text"]
    return {
        "missing-target": (
            tricky_text_csv(tmp_path / "t.csv"),
            ["--target", "sentiment", "--text-column", "text"],
            "target column 'sentiment' is not in",
        ),
        "missing-text-column": (
            tricky_text_csv(tmp_path / "t2.csv"),
            ["--target", "label", "--text-column", "body"],
            "text column 'body' is not in",
        ),
        "empty": (empty, text_args, "is empty"),
        "header-only": (header_only, text_args, "has a header but no rows"),
        "single-class": (
            write_csv(
                tmp_path / "one.csv",
                [["text", "label"]] + [[f"review {i}", "positive"] for i in range(10)],
            ),
            text_args,
            "single class ('positive')",
        ),
        "binary": (binary, text_args, "is not UTF-8 text"),
        "latin1": (latin1, text_args, "is not UTF-8 text"),
        "nonexistent": (tmp_path / "nope.csv", text_args, "does not exist"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing-target",
        "missing-text-column",
        "empty",
        "header-only",
        "single-class",
        "binary",
        "latin1",
        "nonexistent",
    ],
)
def test_train_refuses_bad_data_and_registers_nothing(
    cli: Callable[..., Result],
    registry: Registry,
    bad_data: dict[str, tuple[Path, list[str], str]],
    assert_user_error: Callable[..., None],
    case: str,
) -> None:
    path, extra, fragment = bad_data[case]
    result = cli("train", "--data", path, *extra, "--name", "m")
    assert_user_error(result, fragment)
    assert registry.names() == []
    assert not (registry.root / "m").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give either --sample NAME or --data FILE.csv"),
        (["--sample", "iris", "--data", "x.csv"], "give either --sample"),
        (["--data", "x.csv"], "--data needs --target"),
        (["--sample", "mnist"], "unknown sample 'mnist'"),
        (["--sample", "iris", "--name", "bad name"], "invalid model name"),
        (["--sample", "iris", "--alias", "Prod"], "invalid alias 'Prod'"),
        (["--sample", "iris", "--test-size", "1.5"], "--test-size must be between 0 and 1"),
        (["--sample", "iris", "--tag", "oops"], "invalid --tag 'oops'"),
    ],
    ids=[
        "no-source",
        "two-sources",
        "no-target",
        "unknown-sample",
        "name",
        "alias",
        "test-size",
        "tag",
    ],
)
def test_train_refuses_bad_options(
    cli: Callable[..., Result],
    registry: Registry,
    assert_user_error: Callable[..., None],
    args: list[str],
    fragment: str,
) -> None:
    assert_user_error(cli("train", *args), fragment)
    assert registry.names() == []


def test_train_copes_with_quoted_multiline_non_ascii_csv(
    cli: Callable[..., Result], tmp_path: Path, registry: Registry
) -> None:
    data = tricky_text_csv(tmp_path / "reviews.csv")
    result = cli(
        "train",
        "--data",
        data,
        "--target",
        "label",
        "--text-column",
        "text",
        "--test-size",
        "0.34",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "text-classification"
    assert report["metrics"]["n_train"] + report["metrics"]["n_test"] == 12
    registered = report["registered"]
    assert (registered["name"], registered["version"]) == ("reviews", 1)  # named after the file
    assert registered["metrics"] == report["metrics"]
    assert registry.load("reviews").estimator.predict(["Très bien"])[0] == "positive"


def test_train_iris_registers_feature_names_and_alias(
    cli: Callable[..., Result], registry: Registry
) -> None:
    result = cli("train", "--sample", "iris", "--name", "flowers", "--alias", "staging", "--json")
    assert result.exit_code == 0, result.stderr
    meta = registry.resolve("flowers@staging")
    assert meta.version == 1
    assert meta.task == "tabular-classification"
    assert meta.input_schema.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert meta.classes == ["setosa", "versicolor", "virginica"]
    assert meta.metrics == json.loads(result.stdout)["metrics"]


def test_train_no_register_with_output_writes_only_the_file(
    cli: Callable[..., Result], tmp_path: Path, registry: Registry
) -> None:
    import joblib

    output = tmp_path / "iris.joblib"
    result = cli("train", "--sample", "iris", "--no-register", "--output", output)
    assert result.exit_code == 0, result.stderr
    assert "macro F1" in result.stdout
    assert registry.names() == []
    model = joblib.load(output)
    assert model.predict([[5.1, 3.5, 1.4, 0.2]])[0] == "setosa"


def test_train_tabular_regression_from_csv(
    cli: Callable[..., Result], tmp_path: Path, registry: Registry
) -> None:
    rows = [["x1", "x2", "price"]] + [
        [str(i), str(i % 5), str(3.25 * i + 0.5 * (i % 5))] for i in range(200)
    ]
    data = write_csv(tmp_path / "prices.csv", rows)
    result = cli("train", "--data", data, "--target", "price", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "tabular-regression"
    assert report["metrics"]["r2"] > 0.9
    meta = registry.resolve("prices")
    assert meta.classes is None
    assert meta.input_schema.feature_names == ["x1", "x2"]


@pytest.mark.slow
def test_train_sentiment_then_show_production_has_real_metrics_and_sha256(
    cli: Callable[..., Result], registry: Registry
) -> None:
    trained = cli("train", "--sample", "sentiment", "--name", "sentiment", "--alias", "production")
    assert trained.exit_code == 0, trained.stderr
    reported = re.search(r"accuracy\s*│[\s│]*([0-9.]+)", trained.stdout)
    assert reported is not None, trained.stdout
    assert "sentiment:1" in trained.stdout

    shown = cli("models", "show", "sentiment@production", "--json")
    assert shown.exit_code == 0, shown.stderr
    meta = json.loads(shown.stdout)
    accuracy = meta["metrics"]["accuracy"]
    assert 0.0 < accuracy <= 1.0
    assert f"{accuracy:.3f}" == reported.group(1)  # what train printed is what was stored
    assert meta["metrics"]["macro_f1"] >= 0.80
    assert set(meta["metrics"]["per_class"]) == {"positive", "negative", "neutral"}
    assert meta["aliases"] == ["production"]
    assert meta["task"] == "text-classification"
    stored = registry.artifact_path(registry.metadata("sentiment", 1))
    assert meta["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert meta["size_bytes"] == stored.stat().st_size


def test_train_unwritable_output_exits_2_and_registers_nothing(
    cli: Callable[..., Result],
    tmp_path: Path,
    registry: Registry,
    assert_user_error: Callable[..., None],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("train", "--sample", "iris", "--output", blocker / "model.joblib")
    assert_user_error(result, "cannot write --output")
    assert registry.names() == []
