"""`mlserve predict` and `mlserve loadtest` without --model, against a server (which decides)
and with --local (the same rule against the registry): the only model taking the inputs' kind
answers; several of that kind make --model required, naming them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.data import IRIS_FEATURES, populate, text_estimator
from support.servers import MlserveProcess
from support.wait import wait_for
from typer.testing import CliRunner, Result

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

SETOSA = [5.1, 3.5, 1.4, 0.2]


def rows(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def models_of(result: Result) -> set[tuple[str, Any]]:
    return {(r["model"], r["prediction"]) for r in rows(result)}


@pytest.fixture
def two_text_models(tmp_path: Path) -> Path:
    """A registry with sentiment and reviews (text, pos/neg) and iris (tabular)."""
    root = tmp_path / "registry"
    populate(root)
    Registry(root).register_estimator(text_estimator(), name="reviews", aliases=["production"])
    return root


# ---------------------------------------------------------------------------- against a server
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("good great",), {("sentiment", "pos")}),
        (("good great", "awful bad"), {("sentiment", "pos"), ("sentiment", "neg")}),
        (("--features", json.dumps(SETOSA)), {("iris", "setosa")}),
    ],
    ids=["one-text", "texts", "features"],
)
def test_remote_without_model_reaches_the_model_taking_the_inputs(
    cli: Callable[..., Result], server: MlserveProcess, args: tuple[str, ...], expected: Any
) -> None:
    assert models_of(cli("predict", *args, "--json", "--url", server.url)) == expected


def test_remote_file_and_stdin_without_model(
    cli: Callable[..., Result], runner: CliRunner, server: MlserveProcess, tmp_path: Path
) -> None:
    from mlserve.cli import app

    texts = tmp_path / "texts.txt"
    texts.write_text("good great\nawful bad\n", encoding="utf-8")
    table = tmp_path / "rows.csv"
    table.write_text(",".join(IRIS_FEATURES) + "\n5.1,3.5,1.4,0.2\n", encoding="utf-8")

    from_file = cli("predict", "--file", texts, "--json", "--url", server.url)
    from_csv = cli("predict", "--file", table, "--json", "--url", server.url)
    from_stdin = runner.invoke(
        app, ["predict", "-", "--json", "--url", server.url], input="good great\n"
    )

    assert models_of(from_file) == {("sentiment", "pos"), ("sentiment", "neg")}
    assert models_of(from_csv) == {("iris", "setosa")}
    assert models_of(from_stdin) == {("sentiment", "pos")}


def test_loadtest_without_model_reaches_the_text_model(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    """loadtest sends texts and names no model: against sentiment + iris, all succeed."""
    out = tmp_path / "report.json"

    result = cli("loadtest", "--url", server.url, "--requests", "20", "--concurrency", "2",
                 "--max-error-rate", "0", "--json", out)  # fmt: skip

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(out.read_text(encoding="utf-8"))["status_codes"] == {"200": 20}


# ---------------------------------------------------------------------------- --local
@pytest.mark.parametrize(
    "args",
    [("good great", "awful bad"), ("--features", json.dumps(SETOSA))],
    ids=["texts", "features"],
)
def test_local_without_model_picks_as_the_server_does(
    cli: Callable[..., Result], server: MlserveProcess, args: tuple[str, ...]
) -> None:
    remote = rows(cli("predict", *args, "--json", "--url", server.url))
    local = rows(cli("predict", *args, "--json", "--local", "--registry", server.registry))

    assert [(r["model"], r["version"], r["prediction"]) for r in local] == [
        (r["model"], r["version"], r["prediction"]) for r in remote
    ]


def test_local_with_two_text_models_needs_a_model(
    cli: Callable[..., Result], two_text_models: Path, assert_user_error: Callable[..., None]
) -> None:
    result = cli("predict", "good", "--local", "--registry", two_text_models)

    assert_user_error(
        result,
        "--model is required: 2 models take text (reviews, sentiment)",
        "server.default_model",
    )
    features = cli("predict", "--features", json.dumps(SETOSA), "--json", "--local",
                   "--registry", two_text_models)  # fmt: skip
    assert models_of(features) == {("iris", "setosa")}
    named = cli("predict", "good", "--json", "--local", "--registry", two_text_models,
                "--model", "reviews")  # fmt: skip
    assert models_of(named) == {("reviews", "pos")}


def test_local_with_an_empty_registry_says_so(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    result = cli("predict", "good", "--local", "--registry", tmp_path / "empty")

    assert_user_error(result, "no models to predict with", "holds none")


# ---------------------------------------------------------------------------- a real server
def test_a_model_registered_while_serving_is_served_and_shares_the_default(
    cli: Callable[..., Result],
    tmp_path: Path,
    start_server: Callable[..., MlserveProcess],
    assert_user_error: Callable[..., None],
) -> None:
    """The registry watcher of a running `mlserve serve` picks up a new model: it answers
    requests naming it, and text requests naming none now have two candidates."""
    populate(tmp_path / "live")
    registry = Registry(tmp_path / "live")
    server = start_server(registry.root, config={"traffic": {"watch_interval_s": 0.2}})
    server.wait_ready()
    assert models_of(cli("predict", "good", "--json", "--url", server.url)) == {
        ("sentiment", "pos")
    }

    registry.register_estimator(text_estimator(), name="reviews", aliases=["production"])

    wait_for(
        lambda: (
            server.post("/api/predict", {"text": "good", "model": "reviews"}).status_code == 200
        ),
        "the server to serve reviews",
        30,
        details=server.output,
    )
    result = cli("predict", "good", "--url", server.url)
    assert_user_error(result, "422 invalid_input", "(reviews, sentiment)", "--model", code=1)
