"""`mlserve predict` names the file and line of a bad input (CSV, JSONL, plain text, stdin),
through the server (which names the row of a batch: 'texts.49') and with --local alike."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.slow

SETOSA = [5.1, 3.5, 1.4, 0.2]
EMPTY = "'text' cannot be empty or whitespace only"


# A server's 422 is a refused request (exit 1); --local finds the bad input itself (exit 2).
EXIT = {"remote": 1, "local": 2}


@pytest.fixture(params=["remote", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def predict(mode: str, cli: Callable[..., Result], server: MlserveProcess) -> Callable[..., Result]:
    """`mlserve predict ARGS...` against the server, or --local over the server's registry."""
    if mode == "remote":
        return lambda *args: cli("predict", *args, "--url", server.url)
    return lambda *args: cli("predict", *args, "--local", "--registry", server.registry)


def assert_names_line(result: Result, where: str, *fragments: str, code: int = 1) -> None:
    """One line on stderr, starting with the file and line, naming the problem."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"error: {where}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "texts." not in message and "records." not in message, message
    assert result.stdout == ""


def write_reviews(path: Path, n: int, bad: dict[int, str]) -> Path:
    """A CSV of n reviews (header on line 1); bad[i] replaces the text of review i (0-based)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([i, bad.get(i, "good great" if i % 2 else "awful bad")])
    return path


def test_csv_row_on_line_150_is_named_by_its_line(
    predict: Callable[..., Result], mode: str, tmp_path: Path
) -> None:
    # Line 150 is review 148 (line 1 is the header): past the first batch of 100 rows.
    path = write_reviews(tmp_path / "reviews.csv", 250, {148: "   "})
    result = predict("--file", path, "-m", "sentiment", "--json")
    assert_names_line(result, f"{path} line 150", EMPTY, code=EXIT[mode])


def test_csv_lines_count_multi_line_fields_and_blank_lines(
    predict: Callable[..., Result], mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(
        'text,stars\n"good\ngreat\nlovely",5\n\nawful bad,1\n"",3\ngood,4\n', encoding="utf-8"
    )
    result = predict("--file", path, "-m", "sentiment")
    assert_names_line(result, f"{path} line 7", EMPTY, code=EXIT[mode])


def test_jsonl_record_is_named_by_its_line(
    predict: Callable[..., Result], mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    good = json.dumps(dict(zip(IRIS_FEATURES, SETOSA, strict=True)))
    bad = json.dumps({**dict(zip(IRIS_FEATURES, SETOSA, strict=True)), "petal_width": "wide"})
    path.write_text("\n".join([good, "", good, bad, good]) + "\n", encoding="utf-8")
    result = predict("--file", path, "-m", "iris")
    assert_names_line(result, f"{path} line 4", "petal_width", code=EXIT[mode])


def test_txt_line_is_counted_with_the_blank_lines_before_it(
    predict: Callable[..., Result], mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "reviews.txt"
    lines = ["good great"] * 120 + ["", "", "x" * 20_000] + ["awful bad"] * 5
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = predict("--file", path, "-m", "sentiment")
    assert_names_line(result, f"{path} line 123", "20000 characters", code=EXIT[mode])


def test_a_file_of_one_bad_line_names_it(
    predict: Callable[..., Result], mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('\n{"text": " "}\n', encoding="utf-8")
    result = predict("--file", path, "-m", "sentiment")
    assert_names_line(result, f"{path} line 2", EMPTY, code=EXIT[mode])


def test_the_same_bad_file_gives_the_same_message_both_ways(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    path = write_reviews(tmp_path / "reviews.csv", 30, {20: ""})
    remote = cli("predict", "--file", path, "-m", "sentiment", "--url", server.url)
    local = cli("predict", "--file", path, "-m", "sentiment", "--local", "--registry",
                server.registry)  # fmt: skip
    assert remote.stderr == local.stderr == f"error: {path} line 22: {EMPTY}\n"
    assert (remote.exit_code, local.exit_code) == (1, 2)  # a refused request; a bad input


def test_stdin_lines_are_named(runner: CliRunner, server: MlserveProcess) -> None:
    from mlserve.cli import app

    text = "good great\n\n" + "x" * 10_001 + "\nawful\n"
    result = runner.invoke(app, ["predict", "-", "-m", "sentiment", "--url", server.url],
                           input=text)  # fmt: skip
    assert_names_line(result, "stdin line 3", "10001 characters")


# ---------------------------------------------------------------------------- arguments
def test_an_empty_argument_is_refused_in_one_line(
    predict: Callable[..., Result], mode: str
) -> None:
    result = predict("", "-m", "sentiment")
    assert result.exit_code == EXIT[mode], (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert EMPTY in message
    assert result.stdout == ""


def test_a_blank_argument_among_others_is_named_by_its_position(
    predict: Callable[..., Result], mode: str
) -> None:
    result = predict("good great", "  ", "awful", "-m", "sentiment")
    assert_names_line(result, "input 2", EMPTY, code=EXIT[mode])
