"""`mlserve predict --compare`: one input, several models of a real server, side by side."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from support.servers import MlserveProcess
from typer.testing import Result

pytestmark = pytest.mark.slow

FLOWER = [6.1, 2.8, 4.7, 1.2]


@pytest.fixture
def predict(cli: Callable[..., Result], server: MlserveProcess) -> Callable[..., Result]:
    """`mlserve predict ARGS... --url <the server>` (tests/cli/conftest.py)."""
    return lambda *args: cli("predict", *args, "--url", server.url)


def answers(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def row_of(result: Result, model: str) -> str:
    return next(line for line in result.stdout.splitlines() if f" {model} " in line)


def test_a_text_is_shown_side_by_side(predict: Callable[..., Result]) -> None:
    result = predict("--compare", "sentiment,sentiment@production", "good great lovely")

    assert result.exit_code == 0, result.stderr
    assert "good great lovely" in result.stdout  # the title
    for model in ("sentiment", "sentiment@production"):
        row = row_of(result, model)
        assert " 1 " in row and "pos" in row and "neg" not in row  # version, prediction


def test_json_prints_every_models_answer_in_order(predict: Callable[..., Result]) -> None:
    row = json.dumps(FLOWER)
    body = answers(predict("--compare", "iris,iris@production", "--features", row, "--json"))

    results = body["results"]
    assert [r["model"] for r in results] == ["iris", "iris@production"]
    assert results[0]["prediction"] == results[1]["prediction"]
    assert {r["version"] for r in results} == {1}
    assert [r["id"] for r in results] == [f"{body['request_id']}-0", f"{body['request_id']}-1"]
    assert all(r["processing_time_ms"] > 0 for r in results)


def test_a_model_that_cannot_answer_is_shown_and_exits_1(predict: Callable[..., Result]) -> None:
    result = predict("--compare", "iris,sentiment,nope", "good great")

    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "invalid_input" in row_of(result, "iris")
    assert "pos" in row_of(result, "sentiment")
    assert "model_not_found" in row_of(result, "nope")
    assert "2 of 3 models did not answer: iris, nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_shows_the_error_items_too(predict: Callable[..., Result]) -> None:
    result = predict("--compare", "sentiment,nope", "good great", "--json")

    assert result.exit_code == 1
    sentiment, nope = json.loads(result.stdout)["results"]
    assert sentiment["prediction"] == "pos"
    assert nope["model"] == "nope"
    assert nope["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--local", "good"), "not with --local"),
        (("--file", "nowhere.txt"), "not with --file"),  # refused before it is read
        (("--model", "iris", "good"), "not with --model"),
        (("good", "bad"), "one input"),
        (("-",), "one input"),
        ((), "one input"),
        (("--features", "[1"), "--features is not valid JSON"),
        (("--features", "[1]", "good"), "one input"),
    ],
)
def test_usage_errors_exit_2(
    predict: Callable[..., Result],
    assert_user_error: Callable[..., None],
    args: tuple[str, ...],
    fragment: str,
) -> None:
    assert_user_error(predict("--compare", "sentiment,iris", *args), fragment)


@pytest.mark.parametrize(
    ("models", "fragment"), [(",", "needs model references"), ("a,b,a", "names a twice")]
)
def test_the_models_are_named_once_each(
    predict: Callable[..., Result],
    assert_user_error: Callable[..., None],
    models: str,
    fragment: str,
) -> None:
    assert_user_error(predict("--compare", models, "good"), fragment)


def test_a_refused_request_is_the_servers_message(
    predict: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    models = ",".join(f"m{i}" for i in range(11))
    assert_user_error(predict("--compare", models, "good"), "422", "at most 10", code=1)
