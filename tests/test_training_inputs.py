"""`mlserve train` refuses targets that cannot be classes with one line saying what is wrong:
the same column as --target and --text-column, a continuous target for a text model, a target
of mostly unique values. Exit 2, nothing registered, no raw texts or float "classes" dumped."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from mlserve import training
from mlserve.errors import DataError, UsageError
from mlserve.registry import Registry

GOOD = ["lovely", "great", "superb", "excellent", "wonderful", "delightful", "fine", "nice"]
BAD = ["awful", "terrible", "dreadful", "horrible", "poor", "broken", "sad", "bleak"]


def reviews(path: Path, n: int = 60) -> Path:
    """text, label (pos/neg), rating (fractional), stars (1..5), id (unique integers)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "rating", "stars", "id"])
        for i in range(n):
            word, label = (GOOD[i % 8], "pos") if i % 2 else (BAD[i % 8], "neg")
            text = f"a {word} day, review number {i}, with a long tail of words that goes on"
            rating = 4.0 + (i % 10) / 10 if label == "pos" else 1.0 + (i % 10) / 7
            stars = 4 + (i // 2) % 2 if label == "pos" else 1
            writer.writerow([text, label, f"{rating:.3f}", stars, i])
    return path


def assert_refused(result: Result, registry: Registry, *fragments: str) -> str:
    """Exit 2, one line on stderr naming the fragments, nothing registered, no text dumped."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "with a long tail of words" not in message  # no raw training text
    assert len(message) < 400, message
    assert registry.names() == []
    return message


# ---------------------------------------------------------------------------- the CLI
def test_same_column_for_target_and_text_is_refused(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    path = reviews(tmp_path / "reviews.csv")
    result = cli("train", "--data", path, "--target", "text", "--text-column", "text")
    assert_refused(result, registry, "--target and --text-column both name column 'text'",
                   "two different columns")  # fmt: skip


def test_continuous_target_with_a_text_column_is_refused(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    path = reviews(tmp_path / "reviews.csv")
    result = cli("train", "--data", path, "--target", "rating", "--text-column", "text")
    message = assert_refused(result, registry, "target column 'rating'", "continuous numbers",
                             "column of labels")  # fmt: skip
    assert "e.g. 1.000, 4.100, 1.286" in message  # what the column holds, as written


def test_target_of_unique_values_is_refused_without_dumping_them(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    # Another text column as the target: every "class" is seen once.
    path = tmp_path / "two_texts.csv"
    rows = [["title", "body"]] + [
        [f"title {i} " + "word " * 30, f"body {i} with a long tail of words"] for i in range(40)
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    result = cli("train", "--data", path, "--target", "body", "--text-column", "title")
    assert_refused(result, registry, "target column 'body' has 40 distinct values in 40 rows",
                   "not a column of classes")  # fmt: skip


def test_integer_star_ratings_still_train_a_text_classifier(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    path = reviews(tmp_path / "reviews.csv")
    result = cli("train", "--data", path, "--target", "stars", "--text-column", "text",
                 "--name", "stars", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert registry.names() == ["stars"]
    assert set(registry.metadata("stars", 1).classes or []) == {1, 4, 5}


# ---------------------------------------------------------------------------- the library
def test_read_csv_refuses_the_same_column_before_reading(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="both name column 'label'") as caught:
        training.read_csv(tmp_path / "missing.csv", target="label", text_column="label")
    assert caught.value.exit_code == 2


def test_an_explicit_text_task_takes_numeric_labels_as_classes(tmp_path: Path) -> None:
    # Few fractional values, each seen often: with --task text-classification, they are classes.
    rows = [["text", "grade"]] + [[f"a {GOOD[i % 8]} day {i}", "0.5"] for i in range(10)]
    rows += [[f"a {BAD[i % 8]} day {i}", "1.5"] for i in range(10)]
    path = tmp_path / "grades.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    data = training.read_csv(path, target="grade", text_column="text")
    with pytest.raises(DataError, match="continuous numbers"):
        training.train(data)
    result = training.train(data, task="text-classification")
    assert set(result.metrics["per_class"]) == {"0.5", "1.5"}


def test_a_rare_class_is_named_short(tmp_path: Path) -> None:
    long_label = "a label that is really a whole sentence someone pasted into the column"
    target = ["pos", "neg"] * 6 + [long_label]
    data = training.Dataset(kind="text", target=target, texts=[f"t {i}" for i in range(13)])
    with pytest.raises(DataError, match="have a single example") as caught:
        training.train(data)
    assert long_label not in caught.value.message
    assert "a label that is really a whol…" in caught.value.message
