"""`mlserve serve --model-path [NAME=]PATH`: model files (joblib, skops, ONNX) served without a
registry (issue 15). Each file is read, described and smoke-checked as at `register`, served
as version 1 with the alias production; nothing is written, no registry directory created;
alias changes answer 409; a file that cannot serve ends `serve` with one line and exit 2."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from server.broken_models import BrokenClassifier
from support.net import free_port
from support.servers import MlserveProcess, one_line_serve_error, process_env, serve_until_exit
from typer.testing import Result

from mlserve.config import Settings, load_settings, split_model_path
from mlserve.errors import InvalidReferenceError, UsageError
from mlserve.registry import FileModels, ReadOnlyModelsError, open_models, sha256_bytes
from mlserve.server.app import create_app

FORMATS = ["joblib", "dataframe", "skops", "onnx", "mlflow"]
# The extra each format needs (a missing one skips its case; MLSERVE_TEST_NO_SKIPS fails it).
NEEDS = {"dataframe": ["pandas"], "skops": ["skops"], "onnx": ["onnxruntime", "skl2onnx"]}


def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


def _iris_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    return LogisticRegression(max_iter=500).fit(x, y)


def _text_model() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = ["good great fine", "awful bad", "lovely good", "terrible awful", "great", "bad"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(
        texts, labels
    )


@dataclass
class ModelFile:
    """A model saved the way its format's users save it, and what it answers in-process."""

    name: str
    path: Path
    estimator: Any
    records: list[Any]  # what a request sends, one per row
    local: Any  # the same rows as the estimator takes them


def _save(fmt: str, folder: Path) -> ModelFile:
    for module in NEEDS.get(fmt, []):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the {fmt} case)")
    folder.mkdir(parents=True, exist_ok=True)
    x, y = _iris()
    rows = x[::15]
    if fmt == "dataframe":  # a pipeline fitted on a DataFrame with a string column
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        frame = pd.DataFrame(x[:, :3].astype(float), columns=["a", "b", "c"])
        frame["size"] = np.where(x[:, 3] > 1.0, "big", "small")
        model = Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("num", StandardScaler(), ["a", "b", "c"]),
                            ("cat", OneHotEncoder(), ["size"]),
                        ]
                    ),
                ),
                ("clf", LogisticRegression(max_iter=500)),
            ]
        ).fit(frame, y)
        local = frame.iloc[::15].reset_index(drop=True)
        path = folder / "flowers.joblib"
        joblib.dump(model, path)
        return ModelFile("flowers", path, model, local.to_dict(orient="records"), local)
    model = _iris_model()
    if fmt == "joblib":
        path = folder / "iris.joblib"
        joblib.dump(model, path)
    elif fmt == "mlflow":  # the layout mlflow.sklearn.save_model writes, by hand
        import pickle

        import sklearn

        path = folder / "iris-mlflow"
        path.mkdir()
        (path / "model.pkl").write_bytes(pickle.dumps(model, protocol=4))
        (path / "MLmodel").write_text(
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
            f"    serialization_format: pickle\n    sklearn_version: {sklearn.__version__}\n"
            "run_id: 0a1b2c3d4e5f\n"
        )
    elif fmt == "skops":
        import skops.io

        path = folder / "iris-skops.skops"
        skops.io.dump(model, path)
    else:
        import skl2onnx
        from skl2onnx.common.data_types import FloatTensorType

        graph = skl2onnx.convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, 4]))],
            options={id(model): {"zipmap": False}},
        )
        path = folder / "iris-onnx.onnx"
        path.write_bytes(graph.SerializeToString())
    return ModelFile(path.stem, path, model, rows.tolist(), rows)


def _expect(
    model: ModelFile, answers: list[dict[str, Any]], fmt: str, *, one: bool = False
) -> None:
    """The server's answers are the estimator's own (ONNX: probabilities within 1e-5), for
    the rows in one call (a batch), or `one` row per call (single predictions: BLAS may
    round one row alone differently in the last bit)."""
    local = model.local
    if one:
        proba = np.vstack(
            [model.estimator.predict_proba(local[i : i + 1]) for i in range(len(local))]
        )
    else:
        proba = model.estimator.predict_proba(local)
    assert [a["prediction"] for a in answers] == model.estimator.predict(local).tolist()
    keys = [str(c) for c in model.estimator.classes_]
    for answer, row in zip(answers, proba, strict=True):
        got = answer["probabilities"]
        assert list(got) == keys
        if fmt == "onnx":
            assert np.allclose([got[k] for k in keys], row, atol=1e-5), (got, row)
        else:
            assert [got[k] for k in keys] == row.tolist()


def _files_tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------- FileModels
def test_a_file_is_read_as_version_1_with_the_alias_production_and_nothing_is_written(
    tmp_path: Path, home: Path
) -> None:
    model = _save("joblib", tmp_path)
    before = _files_tree(tmp_path)

    files = FileModels([(None, model.path)])

    assert files.names() == ["iris"]
    assert files.versions("iris") == [1]
    assert files.aliases("iris") == {"production": 1}
    meta = files.resolve("iris@production")
    assert (meta.name, meta.version, meta.format) == ("iris", 1, "joblib")
    assert meta.sha256 == sha256_bytes(model.path.read_bytes())
    assert meta.size_bytes == model.path.stat().st_size
    assert meta.source == str(model.path.resolve())
    assert meta.task == "tabular-classification"
    assert meta.classes == [0, 1, 2]
    assert meta.n_outputs == 1  # the smoke prediction ran
    loaded = files.load("iris")
    assert loaded.metadata == meta
    assert (
        loaded.estimator.predict(model.local).tolist()
        == model.estimator.predict(model.local).tolist()
    )
    assert files.load(meta).estimator is loaded.estimator  # read once, kept
    assert files.summary("iris").aliases == {"production": 1}
    assert files.state_token() == files.state_token()  # nothing to watch
    assert _files_tree(tmp_path) == before
    assert not home.exists()


def test_changes_are_refused_with_409_and_nothing_is_written(tmp_path: Path) -> None:
    model = _save("joblib", tmp_path)
    files = FileModels([(None, model.path)])
    before = _files_tree(tmp_path)

    for change in (
        lambda: files.set_alias("iris", "staging", 1),
        lambda: files.remove_alias("iris", "production"),
        lambda: files.delete("iris"),
        lambda: files.register(model.path, name="other"),
        lambda: files.register_estimator(model.estimator, name="other"),
    ):
        with pytest.raises(ReadOnlyModelsError, match="serves model files") as caught:
            change()
        assert caught.value.status_code == 409
    assert files.names() == ["iris"]
    assert _files_tree(tmp_path) == before


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("/models/iris.joblib", (None, "/models/iris.joblib")),
        ("iris.joblib", (None, "iris.joblib")),
        ("iris=/models/model.joblib", ("iris", "/models/model.joblib")),
        ("iris=model.joblib", ("iris", "model.joblib")),
        ("./a=b.joblib", (None, "./a=b.joblib")),  # a file whose name holds '='
        ("/models/a=b.joblib", (None, "/models/a=b.joblib")),
        ("=x.joblib", (None, "=x.joblib")),
    ],
)
def test_an_entry_is_name_eq_path_when_the_name_has_no_separator(
    entry: str, expected: tuple[str | None, str]
) -> None:
    assert split_model_path(entry) == expected


def test_the_default_name_is_the_stem_and_names_are_checked(tmp_path: Path) -> None:
    model = _save("joblib", tmp_path)
    (tmp_path / "my model.joblib").write_bytes(model.path.read_bytes())

    assert FileModels([("flowers", model.path), (None, model.path)]).names() == ["flowers", "iris"]
    with pytest.raises(InvalidReferenceError, match=r"'my model'.*NAME=PATH"):
        FileModels([(None, tmp_path / "my model.joblib")])
    with pytest.raises(InvalidReferenceError, match="'bad name'"):
        FileModels([("bad name", model.path)])
    with pytest.raises(UsageError, match="two model files are named 'iris'"):
        FileModels([(None, model.path), ("iris", tmp_path / "other.joblib")])


def test_model_paths_come_from_the_toml_file_relative_to_it_or_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf" / "mlserve.toml"
    config.parent.mkdir()
    config.write_text(
        '[server]\nmodel_paths = ["models/iris.joblib", "flowers=models/f.joblib", "/abs/x.onnx"]\n'
    )
    base = config.parent.resolve()

    assert load_settings(config).server.model_paths == [
        str(base / "models/iris.joblib"),
        f"flowers={base / 'models/f.joblib'}",
        "/abs/x.onnx",
    ]
    monkeypatch.setenv("MLSERVE_SERVER__MODEL_PATHS", '["iris=/models/iris.joblib"]')
    assert load_settings().server.model_paths == ["iris=/models/iris.joblib"]
    assert load_settings(server={"model_paths": ["a.joblib"]}).server.model_paths == ["a.joblib"]


def test_open_models_picks_the_files_only_when_model_paths_are_set(
    tmp_path: Path, home: Path
) -> None:
    model = _save("joblib", tmp_path)

    files = open_models(load_settings(server={"model_paths": [str(model.path)]}))
    registry = open_models(load_settings())

    assert isinstance(files, FileModels)
    assert not isinstance(registry, FileModels)
    assert registry.root == home / "registry"


# ---------------------------------------------------------------------------- the app over files
@pytest.fixture
def files_app(tmp_path: Path, home: Path) -> Iterator[tuple[TestClient, ModelFile]]:
    model = _save("joblib", tmp_path / "models")
    settings: Settings = load_settings(
        server={"model_paths": [f"iris={model.path}"], "model_control": "explicit"}
    )
    with TestClient(create_app(settings)) as client:
        yield client, model
    assert not (home / "registry").exists()


def test_the_app_serves_the_file_and_reads_its_metadata(
    files_app: tuple[TestClient, ModelFile],
) -> None:
    client, model = files_app

    answers = [client.post("/api/predict", json={"features": r}).json() for r in model.records]
    _expect(model, answers, "joblib", one=True)
    assert {a["version"] for a in answers} == {1}
    listed = client.get("/api/models").json()["models"]
    assert [(m["name"], m["versions"], m["aliases"], m["status"]) for m in listed] == [
        ("iris", [1], {"production": 1}, "loaded")
    ]
    info = client.get("/api/models/iris").json()
    assert info["sha256"] == sha256_bytes(model.path.read_bytes())
    assert info["format"] == "joblib"
    assert client.get("/api/models/iris/versions/2").status_code == 404


def test_alias_changes_answer_409_and_reload_load_unload_work_in_memory(
    files_app: tuple[TestClient, ModelFile],
) -> None:
    client, model = files_app

    put = client.put("/api/models/iris/aliases/staging", json={"version": 1})
    delete = client.delete("/api/models/iris/aliases/production")
    for response in (put, delete):
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "no_registry"
        assert "serves model files" in error["message"]
        assert str(model.path.parent) not in error["message"]

    reload = client.post("/api/models/iris/reload")
    assert reload.status_code == 200, reload.text
    assert (reload.json()["status"], reload.json()["version"]) == ("unchanged", 1)
    assert client.post("/v2/repository/models/iris/unload", json={}).status_code == 200
    assert client.post("/api/predict", json={"features": model.records[0]}).status_code == 503
    assert client.post("/v2/repository/models/iris/load", json={}).status_code == 200
    again = client.post("/api/predict", json={"features": model.records[0]})
    assert again.status_code == 200, again.text
    assert client.get("/api/models").json()["models"][0]["aliases"] == {"production": 1}


# ---------------------------------------------------------------------------- the CLI
def test_serve_refuses_model_paths_with_a_registry_and_duplicate_names(
    cli: Callable[..., Result], tmp_path: Path, home: Path, assert_user_error: Callable[..., None]
) -> None:
    model = _save("joblib", tmp_path)
    port = str(free_port())

    both = cli("serve", "--port", port, "--model-path", model.path, "--registry", tmp_path / "r")
    assert_user_error(both, "--registry and --model-path")
    twice = cli("serve", "--port", port, "--model-path", model.path, "--model-path", model.path)
    assert_user_error(twice, "two model files are named 'iris'", "NAME=PATH")
    missing = cli("serve", "--port", port, "--model-path", f"iris={tmp_path / 'nope.joblib'}")
    assert_user_error(missing, "nope.joblib does not exist")
    named = cli("serve", "--port", port, "--model-path", tmp_path / "none.joblib", "--name", "x")
    assert_user_error(named, "none.joblib does not exist")  # --name x named the one file
    two = cli(
        "serve", "--port", port, "--model-path", model.path, "--model-path", model.path,
        "--name", "x",
    )  # fmt: skip
    assert_user_error(two, "--name names the one --model-path", "NAME=PATH")
    assert not (tmp_path / "r").exists()
    assert not (home / "registry").exists()


def test_serve_help_says_how_to_name_a_file(cli: Callable[..., Result]) -> None:
    result = cli("serve", "--help")

    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "--model-path" in text
    assert "NAME=PATH" in text


@pytest.mark.slow
def test_a_file_that_is_not_a_model_ends_serve_with_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a pickle at all")

    done = serve_until_exit(tmp_path / "home", tmp_path / "work", "--model-path", broken)

    one_line_serve_error(done, "broken.joblib", "is not a loadable joblib model")
    assert not (tmp_path / "home" / "registry").exists()
    assert _files_tree(tmp_path / "work") == []


@pytest.mark.slow
def test_a_model_that_cannot_predict_ends_serve_with_the_smoke_checks_error(
    tmp_path: Path,
) -> None:
    x, y = _iris()
    path = tmp_path / "broken.joblib"
    joblib.dump(BrokenClassifier().fit(x, y), path)

    done = serve_until_exit(tmp_path / "home", tmp_path / "work", "--model-path", f"b={path}")

    message = one_line_serve_error(done, "broken.joblib", "cannot predict a sample row")
    assert "--no-check" not in message  # register's way out; serve has none
    assert not (tmp_path / "home" / "registry").exists()


# ---------------------------------------------------------------------------- real servers
def _start(home: Path, cwd: Path, entries: list[str]) -> MlserveProcess:
    port = free_port()
    command: list[str | Path] = ["serve", "--port", str(port), "--log-level", "warning"]
    for entry in entries:
        command += ["--model-path", entry]
    return MlserveProcess.start(
        command,
        cwd=cwd,
        env=process_env(home),
        name="serve-files",
        url=f"http://127.0.0.1:{port}",
    )


@pytest.fixture(scope="module")
def formats_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MlserveProcess, dict[str, ModelFile]]]:
    """One real server over a file of every format whose libraries are installed."""
    root = tmp_path_factory.mktemp("model-path")
    saved: dict[str, ModelFile] = {}
    for fmt in FORMATS:
        try:
            saved[fmt] = _save(fmt, root / "models")
        except pytest.skip.Exception:
            continue
    server = _start(root / "home", root / "work", [str(m.path) for m in saved.values()])
    try:
        server.wait_ready()
        yield server, saved
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_served_file_answers_its_estimators_predictions(
    formats_server: tuple[MlserveProcess, dict[str, ModelFile]], fmt: str
) -> None:
    server, saved = formats_server
    if fmt not in saved:
        pytest.skip(f"the {fmt} case needs {', '.join(NEEDS[fmt])}")
    model = saved[fmt]

    batch = server.post("/api/predict/batch", {"records": model.records, "model": model.name})
    assert batch.status_code == 200, batch.text
    _expect(model, batch.json()["predictions"], fmt)
    info = server.get(f"/api/models/{model.name}").json()
    assert info["format"] == ("joblib" if fmt == "dataframe" else fmt)
    assert (info["version"], info["all_aliases"]) == (1, {"production": 1})
    artifact = model.path / "model.pkl" if fmt == "mlflow" else model.path
    assert info["sha256"] == sha256_bytes(artifact.read_bytes())


@pytest.mark.slow
def test_two_named_files_are_served_and_no_registry_is_created(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    iris = _save("joblib", tmp_path / "models")
    text = _text_model()
    reviews_path = tmp_path / "models" / "model.joblib"
    joblib.dump(text, reviews_path)

    server = _start(home, work, [f"flowers={iris.path}", f"reviews={reviews_path}"])
    try:
        server.wait_ready()
        listed = server.get("/api/models").json()["models"]
        assert [(m["name"], m["serving_version"]) for m in listed] == [
            ("flowers", 1),
            ("reviews", 1),
        ]
        flowers = server.post("/api/predict", {"model": "flowers", "features": iris.records[0]})
        assert flowers.status_code == 200, flowers.text
        assert flowers.json()["prediction"] == iris.estimator.predict(iris.local[:1]).tolist()[0]
        reviews = server.post("/api/predict", {"model": "reviews@production", "text": "awful"})
        assert reviews.status_code == 200, reviews.text
        assert reviews.json()["prediction"] == text.predict(["awful"]).tolist()[0]
        moved = server.post("/api/models/flowers/reload", {})
        assert moved.status_code == 200, moved.text
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()
    # What a server always writes: its job and feedback stores under $MLSERVE_HOME/state, and
    # here the test's own log of its output; no registry anywhere.
    assert all(p.startswith("state") for p in _files_tree(home)), _files_tree(home)
    assert _files_tree(work) == ["serve-files.log"]
    assert not any("registry" in p for p in _files_tree(tmp_path))
