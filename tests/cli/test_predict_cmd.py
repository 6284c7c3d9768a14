"""`mlserve predict` against a real `mlserve serve` process (and --local, from the registry)."""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.data import IRIS_FEATURES
from support.metrics import value
from support.net import free_port
from support.servers import MlserveProcess
from typer.testing import CliRunner, Result

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
FIELDS = (
    "input",
    "prediction",
    "confidence",
    "probabilities",
    "model",
    "version",
    "request_id",
    "scores",
)


# Most tests here talk to a real `mlserve serve` process.
pytestmark = pytest.mark.slow


@pytest.fixture
def predict(cli: Callable[..., Result], server: MlserveProcess) -> Callable[..., Result]:
    """`mlserve predict ARGS... --url <the server>` (tests/cli/conftest.py)."""
    return lambda *args: cli("predict", *args, "--url", server.url)


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


def labels(result: Result) -> list[Any]:
    return [r["prediction"] for r in json_lines(result)]


def batch_requests(server: MlserveProcess) -> float:
    return value(
        server.metrics(),
        "mlserve_http_requests_total",
        method="POST",
        route="/api/predict/batch",
        status="200",
    )


# ---------------------------------------------------------------------------- inputs
def test_one_text_prints_a_table(predict: Callable[..., Result]) -> None:
    result = predict("good great lovely", "--model", "sentiment")
    assert result.exit_code == 0, result.stderr
    assert "sentiment:1" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "good great lovely" in line)
    assert "pos" in row and "neg" not in row
    assert "█" in row  # the confidence bar


def test_several_texts_keep_their_order(predict: Callable[..., Result]) -> None:
    result = predict("awful bad", "good great", "terrible", "--model", "sentiment", "--json")
    rows = json_lines(result)
    assert [r["input"] for r in rows] == ["awful bad", "good great", "terrible"]
    assert [r["prediction"] for r in rows] == ["neg", "pos", "neg"]
    assert {(r["model"], r["version"]) for r in rows} == {("sentiment", 1)}


def test_dash_reads_one_text_per_line_from_stdin(runner: CliRunner, server: MlserveProcess) -> None:
    from mlserve.cli import app

    result = runner.invoke(
        app,
        ["predict", "-", "--model", "sentiment", "--json", "--url", server.url],
        input="good great\n\nawful bad\r\n",
    )
    rows = json_lines(result)
    assert [(r["input"], r["prediction"]) for r in rows] == [
        ("good great", "pos"),
        ("awful bad", "neg"),
    ]


def test_file_txt(predict: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "reviews.txt"
    path.write_text("lovely good\nawful\n\nhappy great\n", encoding="utf-8")
    assert labels(predict("--file", path, "--model", "sentiment", "--json")) == [
        "pos",
        "neg",
        "pos",
    ]


def test_file_csv_with_text_column(predict: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('id,review\n1,"bad, awful"\n2,great good\n', encoding="utf-8")
    rows = json_lines(
        predict("--file", path, "--text-column", "review", "--model", "sentiment", "--json")
    )
    assert [(r["input"], r["prediction"]) for r in rows] == [
        ("bad, awful", "neg"),
        ("great good", "pos"),
    ]


def test_file_csv_uses_the_text_column_by_default(
    predict: Callable[..., Result], tmp_path: Path
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text,stars\ngood great,5\nhorrible rude,1\n", encoding="utf-8")
    assert labels(predict("-f", path, "-m", "sentiment", "--json")) == ["pos", "neg"]


def test_file_csv_unknown_text_column_is_a_usage_error(
    predict: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text\ngood\n", encoding="utf-8")
    result = predict("-f", path, "--text-column", "body", "-m", "sentiment")
    assert_user_error(result, "--text-column 'body'", "columns: text")


def test_file_jsonl_texts(predict: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text('"good great"\n{"text": "awful bad"}\n\n', encoding="utf-8")
    assert labels(predict("--file", path, "--model", "sentiment", "--json")) == ["pos", "neg"]


def test_file_jsonl_records(predict: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    lines = [
        json.dumps(dict(zip(IRIS_FEATURES, SETOSA, strict=True))),
        json.dumps({"features": VIRGINICA}),
        json.dumps(SETOSA),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert labels(predict("--file", path, "--model", "iris", "--json")) == [
        "setosa",
        "virginica",
        "setosa",
    ]


@pytest.mark.parametrize(
    "features",
    [json.dumps(dict(zip(IRIS_FEATURES, VIRGINICA, strict=True))), json.dumps(VIRGINICA)],
    ids=["object", "list"],
)
def test_features_as_object_or_list(predict: Callable[..., Result], features: str) -> None:
    (row,) = json_lines(predict("--features", features, "--model", "iris", "--json"))
    assert row["prediction"] == "virginica"
    assert row["input"] == json.loads(features)
    assert set(row["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert row["confidence"] == max(row["probabilities"].values())


def test_file_records_csv_for_a_tabular_model(
    predict: Callable[..., Result], tmp_path: Path
) -> None:
    path = tmp_path / "iris.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(IRIS_FEATURES)
        writer.writerows([SETOSA, VIRGINICA, SETOSA])
    rows = json_lines(predict("--file", path, "--model", "iris", "--json"))
    assert [r["prediction"] for r in rows] == ["setosa", "virginica", "setosa"]
    assert rows[1]["input"] == dict(zip(IRIS_FEATURES, VIRGINICA, strict=True))


# ---------------------------------------------------------------------------- many inputs
def many_texts(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    texts = [f"good great {i}" if i % 3 else f"awful bad {i}" for i in range(n)]
    path = tmp_path / "many.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def test_many_inputs_go_through_the_batch_endpoint_in_chunks(
    predict: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    path, texts = many_texts(tmp_path, 250)
    before = batch_requests(server)
    rows = json_lines(predict("--file", path, "-m", "sentiment", "--batch-size", "100", "--json"))
    assert batch_requests(server) - before == 3  # 100 + 100 + 50
    assert [r["input"] for r in rows] == texts
    assert [r["prediction"] for r in rows] == ["neg" if i % 3 == 0 else "pos" for i in range(250)]


def test_chunks_are_capped_by_the_servers_limit(
    predict: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    limit = server.get("/").json()["limits"]["max_batch_items"]
    assert limit == 100
    path, texts = many_texts(tmp_path, 250)
    before = batch_requests(server)
    rows = json_lines(predict("--file", path, "-m", "sentiment", "--batch-size", "1000", "--json"))
    assert batch_requests(server) - before == 3
    assert len(rows) == 250


def test_json_predictions_match_the_servers_predict(
    predict: Callable[..., Result], server: MlserveProcess
) -> None:
    texts = ["good great", "awful horrible", "lovely service but rude staff"]
    rows = json_lines(predict(*texts, "--model", "sentiment", "--json"))
    for text, row in zip(texts, rows, strict=True):
        direct = server.post("/api/predict", {"text": text, "model": "sentiment"}).json()
        assert row["prediction"] == direct["prediction"]
        assert row["probabilities"] == pytest.approx(direct["probabilities"])
        assert row["confidence"] == pytest.approx(direct["confidence"])
        assert set(row) == set(FIELDS)


@pytest.mark.parametrize("texts", [["good great"], ["good great", "awful horrible"]])
def test_json_request_ids_take_feedback_labels(
    predict: Callable[..., Result], server: MlserveProcess, texts: list[str]
) -> None:
    rows = json_lines(predict(*texts, "--model", "sentiment", "--json"))
    ids = [row["request_id"] for row in rows]
    assert len(set(ids)) == len(texts)
    items = [{"request_id": row["request_id"], "label": row["prediction"]} for row in rows]
    answer = _feedback_when_flushed(server, items)
    assert answer["accepted"] == len(texts)
    assert all(item["correct"] for item in answer["items"])


def _feedback_when_flushed(server: MlserveProcess, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Predictions reach the store within a flush interval: retry unknown ids briefly."""
    deadline = time.monotonic() + 10.0
    while True:
        answer: dict[str, Any] = server.post("/api/feedback", {"items": items}).json()
        if answer.get("unknown", 0) == 0 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


# ---------------------------------------------------------------------------- output
def test_output_jsonl(predict: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = predict("good great", "awful bad", "-m", "sentiment", "--output", out)
    assert result.exit_code == 0, result.stderr
    assert "wrote 2 result(s)" in result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["input"], r["prediction"]) for r in rows] == [
        ("good great", "pos"),
        ("awful bad", "neg"),
    ]


def test_output_csv(predict: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    features = json.dumps(SETOSA)
    result = predict("--features", features, "-m", "iris", "-o", out)
    assert result.exit_code == 0, result.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["input"] == json.dumps(SETOSA)
    assert row["prediction"] == "setosa"
    assert (row["model"], row["version"]) == ("iris", "1")
    probs = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
    assert set(probs) == {"setosa", "versicolor", "virginica"}
    assert float(row["confidence"]) == pytest.approx(max(probs.values()))


def test_top_k_lists_the_most_likely_classes(predict: Callable[..., Result]) -> None:
    result = predict("--features", json.dumps(VIRGINICA), "-m", "iris", "--top", "2")
    assert result.exit_code == 0, result.stderr
    assert "top 2" in result.stdout
    # The cell may fold over two lines: look at the whole table, most likely class first.
    ranked = re.findall(r"(setosa|versicolor|virginica) (\d\.\d\d)", result.stdout)
    assert [name for name, _ in ranked] == ["virginica", "versicolor"]
    assert float(ranked[0][1]) >= float(ranked[1][1])
    assert "setosa" not in result.stdout


# ---------------------------------------------------------------------------- --local
def test_local_matches_the_server(
    cli: Callable[..., Result], server: MlserveProcess, tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(f"{json.dumps(SETOSA)}\n{json.dumps(VIRGINICA)}\n", encoding="utf-8")
    remote = json_lines(cli("predict", "-f", path, "-m", "iris", "--json", "--url", server.url))
    # A URL nobody listens on: --local must not need the server.
    dead = f"http://127.0.0.1:{free_port()}"
    local = json_lines(
        cli("predict", "-f", path, "-m", "iris", "--json", "--local", "--registry", server.registry,
            "--url", dead)
    )  # fmt: skip
    assert [r["prediction"] for r in local] == [r["prediction"] for r in remote]
    for a, b in zip(local, remote, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"])
        assert (a["model"], a["version"]) == (b["model"], b["version"])


def test_local_texts(cli: Callable[..., Result], server: MlserveProcess) -> None:
    result = cli("predict", "good great", "awful", "--local", "--registry", server.registry,
                 "-m", "sentiment", "--json")  # fmt: skip
    assert labels(result) == ["pos", "neg"]


# ---------------------------------------------------------------------------- errors
def test_unreachable_server_exits_1_without_traceback(
    cli: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("predict", "hello", "--url", url)
    assert_user_error(
        result, f"cannot reach {url}: connection refused — is `mlserve serve` running?", code=1
    )
    assert result.stdout == ""


def test_wrong_feature_count_exits_1_with_the_servers_message(
    predict: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    result = predict("--features", "[1, 2, 3]", "--model", "iris")
    assert_user_error(result, "422 invalid_input", "has 3 values", "expects 4", code=1)


def test_unknown_model_exits_1_with_the_servers_message(
    predict: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    result = predict("hello", "there", "--model", "nope")
    assert_user_error(result, "404 model_not_found", "'nope'", code=1)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "give texts as arguments"),
        (("hello", "--file", "{file}"), "give inputs one way"),
        (("-", "hello"), "'-' reads texts from stdin: give it alone"),
        (("--features", "{{not json"), "--features is not valid JSON"),
        (("--features", "3"), "--features must be a JSON object"),
        (("--file", "{missing}"), "does not exist"),
        (("hello", "--url", "ftp://127.0.0.1:8000"), "--url must start with http://"),
        (("hello", "--url", "http://"), "--url"),
    ],
    ids=["no-inputs", "file-and-texts", "dash-and-texts", "features-not-json",
         "features-scalar", "missing-file", "bad-scheme", "no-host"],
)  # fmt: skip
def test_bad_arguments_exit_2(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    tmp_path: Path,
    args: tuple[str, ...],
    fragment: str,
) -> None:
    file = tmp_path / "in.txt"
    file.write_text("hello\n", encoding="utf-8")
    values = {"file": file, "missing": tmp_path / "missing.txt"}
    argv = [a.format(**values) for a in args]
    # A URL nobody listens on: usage errors are found before any request.
    if "--url" not in argv:
        argv += ["--url", f"http://127.0.0.1:{free_port()}"]
    assert_user_error(cli("predict", *argv), fragment, code=2)


def test_empty_file_is_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None], tmp_path: Path
) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    assert_user_error(cli("predict", "--file", path), "no inputs to predict", code=2)


def test_a_non_numeric_cell_for_a_numeric_model_is_refused_naming_its_line(
    cli: Callable[..., Result],
    server: MlserveProcess,
    assert_user_error: Callable[..., None],
    tmp_path: Path,
) -> None:
    # Cells are sent typed (numbers, true/false, else strings): the model's signature decides.
    path = tmp_path / "rows.csv"
    rows = [IRIS_FEATURES, ["5.1", "3.5", "1.4", "0.2"], ["5.0", "wide", "1.4", "0.2"]]
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    result = cli("predict", "--file", path, "--model", "iris", "--url", server.url)
    assert_user_error(result, "rows.csv line 3", "sepal_width", "must be a number", code=1)


def test_ragged_csv_row_is_a_usage_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None], tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    assert_user_error(cli("predict", "--file", path), "line 3", "3 values", "2 columns", code=2)
