"""ONNX models (.onnx) converted with skl2onnx in the test: registered through the CLI with format
"onnx", the task and classes read from the graph, and served by a real server giving the original
scikit-learn model's labels exactly and its probabilities and values within 1e-5 (onnxruntime
computes in float32); a corrupt file, or a host without onnxruntime, is a one-line exit 2."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.data import FLOWERS, SENTENCES, UNSEEN_TEXTS, iris, text_estimator
from support.servers import MlserveProcess, running
from typer.testing import CliRunner, Result

from mlserve.cli import app
from mlserve.registry import Registry
from mlserve.runtime.model import LoadedModel

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

TOL = 1e-5
ROWS = np.array(FLOWERS)
TEXTS = UNSEEN_TEXTS


def _fit_models() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    x, y = iris()
    flowers = LogisticRegression(max_iter=1000).fit(x, y)
    # petal width from the other three measurements
    width = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0)
    width.fit(x[:, :3], x[:, 3])
    return {
        "flowers": flowers,  # converted with skl2onnx's default ZipMap probabilities
        "flowers_raw": flowers,  # ... and with a plain probability tensor
        "width": width,
        "reviews": text_estimator(SENTENCES),
        "margins": LinearSVC().fit(x, y),  # no probabilities: decision_function scores
    }


def _convert(name: str, model: Any) -> bytes:
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    if name == "reviews":
        # The "C" locale for lowercasing: skl2onnx's default (en_US.UTF-8) is missing on
        # minimal hosts, where onnxruntime cannot build the graph.
        graph = skl2onnx.convert_sklearn(
            model,
            initial_types=[("text", StringTensorType([None, 1]))],
            options={TfidfVectorizer: {"locale": "C"}},
        )
    else:
        width = model.n_features_in_
        options = {"zipmap": False} if name == "flowers_raw" else None
        graph = skl2onnx.to_onnx(model, np.zeros((1, width), dtype=np.float32), options=options)
    return bytes(graph.SerializeToString())


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return _fit_models()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]
) -> Iterator[tuple[MlserveProcess, Path]]:
    root = tmp_path_factory.mktemp("onnx")
    registry = root / "registry"
    for name, model in models.items():
        path = root / f"{name}.onnx"
        path.write_bytes(_convert(name, model))
        args = ["register", path, "--name", name, "--registry", registry, "--json"]
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    with running(registry, root / "home") as server:
        yield server, registry


def _expected(model: Any, rows: Any) -> tuple[list[str], list[dict[str, float]]]:
    keys = [str(c) for c in model.classes_]
    proba = [dict(zip(keys, map(float, p), strict=True)) for p in model.predict_proba(rows)]
    return [str(v) for v in model.predict(rows)], proba


def _assert_close(got: list[dict[str, float]], want: list[dict[str, float]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)  # the classes, in the model's order
        assert max(abs(g[k] - w[k]) for k in w) <= TOL, (g, w)


def _answers(predictions: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    return [p["prediction"] for p in predictions], [p["probabilities"] for p in predictions]


@pytest.mark.slow  # the module's real server
def test_the_metadata_is_read_from_the_graph(served: tuple[MlserveProcess, Path]) -> None:
    _, path = served
    registry = Registry(path)
    classes = ["setosa", "versicolor", "virginica"]
    for name, task, want in (
        ("flowers", "tabular-classification", classes),
        ("flowers_raw", "tabular-classification", classes),
        ("margins", "tabular-classification", classes),
        ("width", "tabular-regression", None),
        ("reviews", "text-classification", sorted(SENTENCES)),
    ):
        meta = registry.resolve(name)
        assert (meta.format, meta.artifact, meta.task) == ("onnx", "model.onnx", task), name
        assert meta.classes == want, name
        assert registry.artifact_path(meta).name == "model.onnx"
    flowers = registry.resolve("flowers")
    assert flowers.has_predict_proba
    assert flowers.input_schema.n_features == 4
    assert flowers.format_details["inputs"] == [
        {"name": "X", "type": "tensor(float)", "shape": [None, 4]}
    ]
    assert flowers.format_details["label"] == "output_label"
    assert flowers.format_details["probabilities"] == "output_probability"
    margins = registry.resolve("margins")
    assert (margins.has_predict_proba, margins.score_method) == (False, "decision_function")
    reviews = registry.resolve("reviews")
    assert reviews.input_schema.kind == "text"
    assert reviews.format_details["inputs"][0]["type"] == "tensor(string)"
    assert registry.resolve("width").input_schema.n_features == 3


@pytest.mark.slow  # the module's real server
def test_a_classifier_answers_the_original_models_labels_and_probabilities(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    x = iris()[0][::2]  # 75 flowers: within the server's batch limit
    model = models["flowers"]
    for name in ("flowers", "flowers_raw"):
        response = server.post("/api/predict/batch", {"records": x.tolist(), "model": name})
        assert response.status_code == 200, response.text
        labels, proba = _answers(response.json()["predictions"])
        want_labels, want_proba = _expected(model, x)
        assert labels == want_labels
        _assert_close(proba, want_proba)
        for row in FLOWERS:
            response = server.post("/api/predict", {"features": row, "model": name})
            assert response.status_code == 200, response.text
            labels, proba = _answers([response.json()])
            assert labels == _expected(model, [row])[0]
            assert response.json()["confidence"] == max(proba[0].values())
            _assert_close(proba, _expected(model, [row])[1])


@pytest.mark.slow  # the module's real server
def test_a_text_classifier_answers_the_original_pipelines(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    model = models["reviews"]
    response = server.post("/api/predict/batch", {"texts": TEXTS, "model": "reviews"})
    assert response.status_code == 200, response.text
    labels, proba = _answers(response.json()["predictions"])
    want_labels, want_proba = _expected(model, TEXTS)
    assert labels == want_labels
    _assert_close(proba, want_proba)
    response = server.post("/api/predict", {"text": TEXTS[0], "model": "reviews"})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == want_labels[0]
    _assert_close([response.json()["probabilities"]], want_proba[:1])


@pytest.mark.slow  # the module's real server
def test_a_regressor_answers_the_original_values(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    x, _ = iris()
    rows = x[::5, :3]
    want = models["width"].predict(rows)
    response = server.post("/api/predict/batch", {"records": rows.tolist(), "model": "width"})
    assert response.status_code == 200, response.text
    got = [p["prediction"] for p in response.json()["predictions"]]
    assert np.allclose(got, want, rtol=0, atol=TOL), np.abs(np.subtract(got, want)).max()
    assert all(p["probabilities"] is None for p in response.json()["predictions"])
    response = server.post("/api/predict", {"features": rows[0].tolist(), "model": "width"})
    assert response.status_code == 200, response.text
    assert abs(response.json()["prediction"] - want[0]) <= TOL


@pytest.mark.slow  # the module's real server
def test_a_classifier_without_probabilities_answers_decision_scores(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    model = models["margins"]
    response = server.post("/api/predict/batch", {"records": FLOWERS, "model": "margins"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["prediction"] for p in predictions] == [str(v) for v in model.predict(ROWS)]
    assert all(p["probabilities"] is None for p in predictions)
    keys = [str(c) for c in model.classes_]
    want = [dict(zip(keys, map(float, s), strict=True)) for s in model.decision_function(ROWS)]
    _assert_close([p["scores"] for p in predictions], want)


@pytest.mark.slow  # the module's real server
def test_v2_infer_answers_the_original_classifiers(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    tensor = {"name": "input", "shape": [len(FLOWERS), 4], "datatype": "FP64", "data": FLOWERS}
    response = server.post("/v2/models/flowers/infer", {"inputs": [tensor]})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    model = models["flowers"]
    assert outputs["label"]["data"] == [str(v) for v in model.predict(ROWS)]
    got = np.asarray(outputs["probabilities"]["data"], dtype=float).reshape(len(FLOWERS), -1)
    assert np.abs(got - model.predict_proba(ROWS)).max() <= TOL


def test_a_corrupt_file_is_refused_and_nothing_is_written(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not an ONNX graph")
    assert_user_error(cli("register", path, "--name", "broken"), "broken.onnx", "ONNX model")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_user_error(cli("register", empty, "--name", "broken"), "empty.onnx", "is empty")
    assert registry.names() == []


def test_without_onnxruntime_register_names_the_extra(
    cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(_convert("width", _fit_models()["width"]))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a missing package looks like
    assert_user_error(cli("register", path, "--name", "m"), "pip install 'mlserve-sklearn[onnx]'")


def test_a_clusterer_graph_registers_with_the_task_given(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    from sklearn.cluster import KMeans

    x, _ = iris()
    model = KMeans(n_clusters=3, n_init=1, random_state=0).fit(x)
    path = tmp_path / "clusters.onnx"
    path.write_bytes(bytes(skl2onnx.to_onnx(model, x[:1].astype(np.float32)).SerializeToString()))
    result = cli("register", path, "--name", "clusters")
    assert result.exit_code == 2 and "--task" in result.stderr  # labels only: what are they?
    result = cli("register", path, "--name", "clusters", "--task", "clustering", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["task"] == "clustering"
    loaded = registry.load(registry.resolve("clusters"))
    answers = LoadedModel(loaded.estimator, loaded.metadata).predict(x[:10].tolist())
    assert [a.label for a in answers] == model.predict(x[:10]).tolist()


def test_the_adapter_pickles_as_its_graph(
    registry: Registry, tmp_path: Path, models: dict[str, Any]
) -> None:
    path = tmp_path / "flowers.onnx"
    path.write_bytes(_convert("flowers_raw", models["flowers"]))
    meta = registry.register(path, name="flowers")
    estimator = registry.load(meta).estimator
    again = pickle.loads(pickle.dumps(estimator))  # noqa: S301 - our own object
    assert again.classes_.tolist() == estimator.classes_.tolist()
    assert np.array_equal(again.predict_proba(ROWS), estimator.predict_proba(ROWS))


class CountingSession:
    """An onnxruntime session that records the outputs each run asks for."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[list[str]] = []

    def run(self, outputs: list[str], feed: dict[str, Any], *args: Any) -> Any:
        self.runs.append(list(outputs))
        return self.session.run(outputs, feed, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.mark.parametrize("name", ["flowers", "flowers_raw", "reviews", "margins"])
def test_a_classifier_batch_runs_the_graph_once_for_labels_and_probabilities_or_scores(
    name: str, registry: Registry, tmp_path: Path, models: dict[str, Any]
) -> None:
    original = models[name]
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(_convert(name, original))
    loaded = registry.load(registry.register(path, name=name))
    session = CountingSession(loaded.estimator._session)
    loaded.estimator._session = session
    rows = list(TEXTS) if name == "reviews" else ROWS.tolist()

    answers = LoadedModel(loaded.estimator, loaded.metadata).predict(rows)

    assert len(session.runs) == 1, session.runs  # labels and probabilities (scores) together
    assert len(session.runs[0]) == 2, session.runs
    x = rows if name == "reviews" else ROWS
    assert [str(a.label) for a in answers] == [str(v) for v in original.predict(x)]
    keys = [str(c) for c in original.classes_]
    if name == "margins":
        got = [a.scores for a in answers]
        want = original.decision_function(x)
    else:
        got = [a.probabilities for a in answers]
        want = original.predict_proba(x)
    _assert_close(got, [dict(zip(keys, map(float, w), strict=True)) for w in want])


def test_a_graph_exported_for_one_row_runs_once_per_row(
    registry: Registry, tmp_path: Path, models: dict[str, Any]
) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    original = models["flowers"]
    graph = skl2onnx.convert_sklearn(original, initial_types=[("X", FloatTensorType([1, 4]))])
    path = tmp_path / "one_row.onnx"
    path.write_bytes(bytes(graph.SerializeToString()))
    loaded = registry.load(registry.register(path, name="one_row"))
    session = CountingSession(loaded.estimator._session)
    loaded.estimator._session = session

    answers = LoadedModel(loaded.estimator, loaded.metadata).predict(ROWS.tolist())

    assert len(session.runs) == len(ROWS), session.runs
    want_labels, want_proba = _expected(original, ROWS)
    assert [str(a.label) for a in answers] == want_labels
    _assert_close([a.probabilities for a in answers], want_proba)
