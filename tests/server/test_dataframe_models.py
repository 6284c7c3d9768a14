"""A DataFrame ColumnTransformer pipeline (strings, booleans, integers, floats, missing values)
registered with an example and served by a real server: every path (single, batch, async job
from JSON and CSV, V2 per-column tensors, `predict --local`) gives exactly what the pipeline
gives in-process on the same rows; a wrong type is a 422 naming the row, column and type."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from support.servers import MlserveProcess, running
from typer.testing import CliRunner

from mlserve.cli import app
from mlserve.registry import Registry

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

WAIT_S = 30.0
ROWS = 40


def _table(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo", "lima"], n).astype(object),
            "member": rng.choice([True, False], n).astype(object),
            "visits": rng.integers(0, 30, n),
            "spend": rng.normal(50.0, 15.0, n).round(2),
        }
    )
    frame.loc[::7, "spend"] = np.nan
    frame.loc[3::9, "city"] = np.nan
    frame.loc[5::11, "member"] = np.nan
    return frame


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows as JSON objects: NaN is null, numpy scalars plain Python values."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                k: None
                if isinstance(v, float) and math.isnan(v)
                else (v.item() if hasattr(v, "item") else v)
                for k, v in row.items()
            }
        )
    return out


@pytest.fixture(scope="module")
def pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _table(400, seed=1)
    target = np.where(
        (frame["visits"] > 12) & (frame["member"].fillna(False).astype(bool)), "buy", "skip"
    )
    prep = ColumnTransformer(
        [
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["city", "member"],
            ),
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                ["visits", "spend"],
            ),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=500)).fit(frame, target)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pipeline: Any
) -> Iterator[tuple[MlserveProcess, Path]]:
    root = tmp_path_factory.mktemp("dataframe")
    joblib.dump(pipeline, root / "shop.joblib")
    (root / "example.json").write_text(json.dumps(_records(_table(5, seed=2))))
    registry = root / "registry"
    result = CliRunner().invoke(
        app,
        [
            "register", str(root / "shop.joblib"), "--name", "shop",
            "--example", str(root / "example.json"), "--registry", str(registry), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with running(registry, root / "home") as server:
        yield server, registry


@pytest.fixture(scope="module")
def rows() -> Any:
    return _table(ROWS, seed=3)


def _expected(pipeline: Any, frame: Any) -> tuple[list[Any], list[dict[str, float]]]:
    labels = [str(v) for v in pipeline.predict(frame)]
    proba = pipeline.predict_proba(frame)
    keys = [str(c) for c in pipeline.classes_]
    return labels, [dict(zip(keys, map(float, p), strict=True)) for p in proba]


def _answers(predictions: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    return [p["prediction"] for p in predictions], [p["probabilities"] for p in predictions]


def test_the_signature_is_typed_from_the_example(served: tuple[MlserveProcess, Path]) -> None:
    server, _ = served
    info = server.get("/api/models/shop").json()
    columns = {c["name"]: c for c in info["input_schema"]["columns"]}
    assert {n: c["dtype"] for n, c in columns.items()} == {
        "city": "str",
        "member": "bool",
        "visits": "int",
        "spend": "float",
    }
    assert columns["city"]["categories"] == ["lima", "oslo", "paris", "rome"]
    assert info["input_schema"]["dataframe"] is True


def test_single_and_batch_answers_equal_the_pipeline(
    served: tuple[MlserveProcess, Path], pipeline: Any, rows: Any
) -> None:
    server, _ = served
    labels, proba = _expected(pipeline, rows)
    records = _records(rows)
    for i, record in enumerate(records):
        response = server.post("/api/predict", {"features": record, "model": "shop"})
        assert response.status_code == 200, response.text
        # one row, as the server scored it: a one-row DataFrame in-process
        assert _answers([response.json()]) == _expected(pipeline, rows.iloc[[i]])

    response = server.post("/api/predict/batch", {"records": records, "model": "shop"})
    assert response.status_code == 200, response.text
    assert _answers(response.json()["predictions"]) == (labels, proba)


def _job_results(server: MlserveProcess, job: dict[str, Any]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        status = server.get(f"/api/jobs/{job['job_id']}").json()
        if status["status"] in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.02)  # polling interval of a bounded wait
    assert status["status"] == "completed", status
    body = server.get(f"/api/jobs/{job['job_id']}/result", params={"limit": 10_000}).json()
    return list(body["predictions"])


def test_async_jobs_from_json_and_csv_equal_the_pipeline(
    served: tuple[MlserveProcess, Path], pipeline: Any, rows: Any
) -> None:
    server, _ = served
    expected = _expected(pipeline, rows)
    response = server.post("/api/predict/async", {"records": _records(rows), "model": "shop"})
    assert response.status_code == 202, response.text
    assert _answers(_job_results(server, response.json())) == expected

    csv_text = rows.to_csv(index=False)  # missing values are empty cells
    response = httpx_post_file(server, csv_text)
    assert response.status_code == 202, response.text
    assert _answers(_job_results(server, response.json())) == expected


def httpx_post_file(server: MlserveProcess, text: str) -> Any:
    import httpx

    return httpx.post(
        server.url + "/api/predict/async",
        files={"file": ("rows.csv", text.encode(), "text/csv")},
        data={"model": "shop"},
        timeout=10,
    )


def test_v2_takes_one_tensor_per_column(
    served: tuple[MlserveProcess, Path], pipeline: Any, rows: Any
) -> None:
    server, _ = served
    meta = server.get("/v2/models/shop").json()
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("city", "BYTES"),
        ("member", "BOOL"),
        ("visits", "INT64"),
        ("spend", "FP64"),
    ]
    records = _records(rows)
    inputs = [
        {"name": t["name"], "datatype": t["datatype"], "shape": [len(records)],
         "data": [r[t["name"]] for r in records]}
        for t in meta["inputs"]
    ]  # fmt: skip
    response = server.post("/v2/models/shop/infer", {"inputs": inputs})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    labels, proba = _expected(pipeline, rows)
    assert outputs["label"]["data"] == labels
    keys = [str(c) for c in pipeline.classes_]
    flat = [p[k] for p in proba for k in keys]
    assert outputs["probabilities"]["data"] == flat


def test_predict_local_equals_the_pipeline(
    served: tuple[MlserveProcess, Path], pipeline: Any, rows: Any, tmp_path: Path
) -> None:
    _, registry = served
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    result = CliRunner().invoke(
        app,
        ["predict", "--local", "--file", str(path), "--model", "shop", "--json",
         "--registry", str(registry)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert _answers(answers) == _expected(pipeline, rows)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("city", 5, "'records.1.city' must be a string (str column), not 5"),
        ("member", "yes", "'records.1.member' must be true or false (bool column), not 'yes'"),
        ("visits", 2.5, "'records.1.visits' must be an integer (int column), not 2.5"),
        ("spend", "12.5", "'records.1.spend' must be a number (float column), not '12.5'"),
    ],
)
def test_a_wrong_type_is_a_422_naming_row_column_and_type(
    served: tuple[MlserveProcess, Path], rows: Any, field: str, value: Any, expected: str
) -> None:
    server, _ = served
    records = _records(rows.head(3))
    records[1][field] = value
    response = server.post("/api/predict/batch", {"records": records, "model": "shop"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == expected


def test_a_model_that_cannot_predict_its_example_is_refused(tmp_path: Path, pipeline: Any) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = _table(60, seed=4).dropna()
    strict = make_pipeline(
        ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["city"])]),
        LogisticRegression(),
    ).fit(frame[["city"]], np.arange(len(frame)) % 2)
    joblib.dump(strict, tmp_path / "strict.joblib")
    (tmp_path / "example.json").write_text(json.dumps({"city": "tokyo"}))
    registry = tmp_path / "registry"
    result = CliRunner().invoke(
        app,
        ["register", str(tmp_path / "strict.joblib"), "--name", "strict",
         "--example", str(tmp_path / "example.json"), "--registry", str(registry)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot predict its example" in result.output
    assert "tokyo" in result.output  # the model's own error, in one line
    assert "Traceback" not in result.output
    assert Registry(registry).names() == []  # nothing written

    # --no-check registers it anyway, and says so
    result = CliRunner().invoke(
        app,
        ["register", str(tmp_path / "strict.joblib"), "--name", "strict", "--no-check",
         "--example", str(tmp_path / "example.json"), "--registry", str(registry)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--no-check" in result.output
    assert Registry(registry).versions("strict") == [1]
