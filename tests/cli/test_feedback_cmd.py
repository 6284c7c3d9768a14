"""`mlserve feedback FILE` and `mlserve models quality REF`: labels from files, figures in
tables; usage errors exit 2, labels not stored exit 1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populate
from support.net import free_port
from support.probe import HEAVY, imported
from support.servers import MlserveProcess
from typer.testing import Result

from mlserve.cli.feedback_cmd import read_labels, send_labels
from mlserve.client import Client
from mlserve.config import load_settings


# ---------------------------------------------------------------------------- reading files
def test_a_csv_file_gives_request_id_label_pairs(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffrequest_id , label\nr1,positive\n\n r2 , 1 \n", encoding="utf-8")

    assert read_labels(path) == [("r1", "positive"), ("r2", "1")]


def test_a_jsonl_file_gives_request_id_label_pairs(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    lines = [{"request_id": "r1", "label": "positive"}, {"request_id": "r2", "label": 3}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")

    assert read_labels(path) == [("r1", "positive"), ("r2", 3)]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("labels.txt", "r1 positive\n", ".csv or .jsonl"),
        ("labels.csv", "id,label\nr1,positive\n", "missing request_id"),
        ("labels.csv", "request_id,label\nr1,\n", "row 2: label is empty"),
        ("labels.csv", "request_id,label\n", "holds no labels"),
        ("labels.jsonl", '{"request_id": "r1", "label": "a"}\n{nope\n', "line 2 is not valid JSON"),
        ("labels.jsonl", '["r1", "a"]\n', "line 1: expected an object"),
        ("labels.jsonl", '{"request_id": 5, "label": "a"}\n', "request_id must be"),
        ("labels.jsonl", '{"request_id": "r1", "label": null}\n', "label must be"),
    ],
)
def test_a_bad_file_is_a_usage_error(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    tmp_path: Path,
    name: str,
    content: str,
    fragment: str,
) -> None:
    path = tmp_path / name
    path.write_text(content)

    result = cli("feedback", path, "--url", "http://127.0.0.1:9")

    assert_user_error(result, fragment, code=2)


def test_a_missing_file_is_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None], tmp_path: Path
) -> None:
    assert_user_error(cli("feedback", tmp_path / "nope.csv"), "does not exist", code=2)


def test_feedback_help_does_not_import_sklearn_or_fastapi() -> None:
    assert imported(HEAVY, "feedback", "--help") == ("", "0")
    assert imported(HEAVY, "models", "quality", "--help") == ("", "0")


# ---------------------------------------------------------------------------- sending, in process
@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    """An in-process server over the tiny sentiment (pos/neg) and iris models."""
    from mlserve.server.app import create_app

    populate(tmp_path / "registry")
    settings = load_settings(
        None, home=str(tmp_path / "home"), registry={"path": str(tmp_path / "registry")}
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_labels_are_sent_in_chunks_and_every_outcome_counted(app_client: TestClient) -> None:
    rows = app_client.post(
        "/api/predict/batch", json={"texts": ["good great", "awful bad"] * 3, "model": "sentiment"}
    ).json()["predictions"]
    labels: list[tuple[str, Any]] = [(r["id"], r["prediction"]) for r in rows]
    labels += [(rows[0]["id"], "neg"), ("nope", "pos"), (rows[1]["id"], "maybe")]

    with Client(http=app_client) as client:
        summary = send_labels(client, labels, chunk_size=4)

    assert (summary.sent, summary.accepted, summary.replaced) == (9, 6, 1)
    assert (summary.unknown, summary.invalid, summary.failed) == (1, 1, 2)
    assert [f.request_id for f in summary.failures] == ["nope", rows[1]["id"]]
    requests = app_client.get("/metrics").text
    assert 'route="/api/feedback",status="200"} 3.0' in requests  # 9 labels in chunks of 4


def test_the_client_reads_quality_reports(app_client: TestClient) -> None:
    answer = app_client.post("/api/predict", json={"text": "good", "model": "sentiment"}).json()

    with Client(http=app_client) as client:
        result = client.feedback_one(answer["request_id"], answer["prediction"])
        report = client.quality("sentiment", window=10)

    assert result.outcome == "accepted"
    assert report.window == 10
    assert report.versions[0].rolling.accuracy == 1.0


# ---------------------------------------------------------------------------- a real server
# `server`: the command tests' real server (tests/cli/conftest.py).
def predictions(server: MlserveProcess, texts: list[str]) -> list[dict[str, Any]]:
    response = server.post("/api/predict/batch", {"texts": texts, "model": "sentiment"})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["predictions"]
    return rows


@pytest.mark.slow
def test_feedback_then_quality_against_a_server(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    rows = predictions(server, ["good great", "awful bad", "lovely good", "terrible", "great"])
    flip = {"pos": "neg", "neg": "pos"}
    # 4 of 5 right.
    truth = [r["prediction"] for r in rows[:4]] + [flip[rows[4]["prediction"]]]
    path = tmp_path / "labels.csv"
    path.write_text(
        "request_id,label\n" + "".join(f"{r['id']},{t}\n" for r, t in zip(rows, truth, strict=True))
    )

    sent = cli("feedback", path, "--url", server.url, "--json")
    shown = cli("models", "quality", "sentiment:1", "--url", server.url, "--json")
    table = cli("models", "quality", "sentiment@production", "--url", server.url)

    assert sent.exit_code == 0, sent.stderr
    assert json.loads(sent.stdout) == {
        "sent": 5,
        "accepted": 5,
        "replaced": 0,
        "unknown": 0,
        "invalid": 0,
        "failures": [],
    }
    assert shown.exit_code == 0, shown.stderr
    (version,) = json.loads(shown.stdout)["versions"]
    assert version["version"] == 1
    assert version["rolling"]["labelled"] >= 5
    assert table.exit_code == 0, table.stderr
    assert "live quality of sentiment" in table.stdout
    assert "confusion matrix" in table.stdout


@pytest.mark.slow
def test_labels_not_stored_exit_1_and_are_listed(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    (row,) = predictions(server, ["good"])
    path = tmp_path / "labels.jsonl"
    path.write_text(
        json.dumps({"request_id": row["id"], "label": "pos"})
        + "\n"
        + json.dumps({"request_id": "never-made", "label": "pos"})
        + "\n"
        + json.dumps({"request_id": row["id"], "label": "POS"})
        + "\n"
    )

    result = cli("feedback", path, "--url", server.url)

    assert result.exit_code == 1
    assert "unknown: no prediction with id 'never-made'" in result.stderr
    assert "invalid: label 'POS' is not a class of model sentiment:1" in result.stderr
    assert "accepted" in result.stdout


@pytest.mark.slow
def test_quality_of_an_unknown_model_or_alias_fails(
    cli: Callable[..., Result], server: MlserveProcess
) -> None:
    unknown = cli("models", "quality", "nothing", "--url", server.url)
    alias = cli("models", "quality", "sentiment@nope", "--url", server.url)

    assert unknown.exit_code == 1
    assert "404" in unknown.stderr
    assert alias.exit_code == 1
    assert "no alias 'nope'" in alias.stderr


def test_an_unreachable_server_exits_1(cli: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\nr1,pos\n")
    url = f"http://127.0.0.1:{free_port()}"

    result = cli("feedback", path, "--url", url)

    assert result.exit_code == 1
    assert "cannot reach" in result.stderr


def test_a_bad_url_is_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("models", "quality", "sentiment", "--url", "ftp://x"), "--url", code=2)
