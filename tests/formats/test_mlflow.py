"""MLflow model directories (the sklearn flavour), written by hand in MLflow's layout and by
mlflow.sklearn.save_model: registered through the CLI with format "mlflow", the MLflow signature
as the typed columns, the input example as the smoke test and the run id in the tags; served by
a real server giving exactly the in-process answers. Another flavour, an example the model
cannot predict, and a signature that is not the model's are refused at register."""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.data import FLOWERS, IRIS_FEATURES, iris
from support.servers import MlserveProcess, running
from typer.testing import CliRunner, Result

from mlserve.cli import app
from mlserve.registry import Registry

pd = pytest.importorskip("pandas")
yaml = pytest.importorskip("yaml")

RUN_ID = "4f1c2a9be07d4c58a3f0d2b6c1e9a7d5"
COLUMNS = ["city", "member", "visits", "spend"]
# What MLflow infers from the training frame: string, boolean, long, and a double with gaps
SIGNATURE = [
    {"type": "string", "name": "city", "required": True},
    {"type": "boolean", "name": "member", "required": True},
    {"type": "long", "name": "visits", "required": True},
    {"type": "double", "name": "spend", "required": False},
]
TYPED = {
    "city": ("str", False),
    "member": ("bool", False),
    "visits": ("int", False),
    "spend": ("float", True),
}


def _table(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo", "lima"], n).astype(object),
            "member": rng.choice([True, False], n),
            "visits": rng.integers(0, 30, n),
            "spend": rng.normal(50.0, 15.0, n).round(2),
        }
    )
    frame.loc[::7, "spend"] = np.nan
    return frame


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows as JSON objects: NaN is null, numpy scalars plain Python values."""
    return [
        {k: None if v != v else (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _table(300, seed=1)
    target = np.where((frame["visits"] > 12) & frame["member"], "buy", "skip")
    prep = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "member"]),
            ("visits", StandardScaler(), ["visits"]),
            ("spend", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["spend"]),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=500)).fit(frame, target)


def _flowers() -> Any:
    """A float-matrix model (fitted on a plain array: no feature_names_in_)."""
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    return LogisticRegression(max_iter=1000).fit(np.asarray(x), y)


def write_by_hand(
    root: Path,
    model: Any,
    *,
    signature: list[dict[str, Any]] | None = None,
    example: Any = None,
    example_info: dict[str, Any] | None = None,
    serialization: str = "pickle",
    flavors: dict[str, Any] | None = None,
    run_id: str | None = RUN_ID,
) -> Path:
    """A model directory in the layout mlflow.sklearn.save_model writes (MLmodel YAML, the
    pickled model, input_example.json), without mlflow."""
    root.mkdir(parents=True)
    if serialization == "cloudpickle":
        import cloudpickle

        (root / "model.pkl").write_bytes(cloudpickle.dumps(model, protocol=4))
    else:
        (root / "model.pkl").write_bytes(pickle.dumps(model, protocol=4))
    import sklearn

    mlmodel: dict[str, Any] = {
        "flavors": flavors
        or {
            "python_function": {
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.sklearn",
                "model_path": "model.pkl",
                "predict_fn": "predict",
                "python_version": "3.11.7",
            },
            "sklearn": {
                "code": None,
                "pickled_model": "model.pkl",
                "serialization_format": serialization,
                "sklearn_version": sklearn.__version__,
            },
        },
        "mlflow_version": "2.17.2",
        "model_uuid": "0e5d0c1b8f0e4d6f9b1f3a2c4d5e6f70",
        "utc_time_created": "2026-11-30 09:12:44.120391",
    }
    if run_id:
        mlmodel["run_id"] = run_id
        mlmodel["artifact_path"] = "model"
    if signature is not None:
        # MLflow embeds the schema as a JSON string in the YAML
        mlmodel["signature"] = {"inputs": json.dumps(signature), "outputs": None, "params": None}
    if example is not None:
        (root / "input_example.json").write_text(json.dumps(example))
        mlmodel["saved_input_example_info"] = example_info or {
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "type": "dataframe",
        }
    (root / "MLmodel").write_text(yaml.safe_dump(mlmodel, default_flow_style=False))
    return root


def _split(frame: Any) -> dict[str, Any]:
    """A DataFrame as MLflow's input_example.json holds it (pandas orient split, no index)."""
    return {"columns": list(frame.columns), "data": [list(r.values()) for r in _records(frame)]}


def write_with_mlflow(root: Path, model: Any, example: Any, **kwargs: Any) -> Path:
    """The directory mlflow.sklearn.save_model writes (signature inferred from the example)."""
    with warnings.catch_warnings():
        # mlflow and pandas warn (deprecations, integer-column hints) while saving; this test
        # checks what is written, not mlflow's own warnings.
        warnings.simplefilter("ignore")
        import mlflow.sklearn
        from mlflow.models import Model

        mlflow.sklearn.save_model(
            model,
            str(root),
            input_example=example,
            pip_requirements=["scikit-learn"],  # no requirements inference (a subprocess)
            mlflow_model=Model(run_id=RUN_ID),
            **kwargs,
        )
    return root


def _expected(model: Any, rows: Any) -> list[tuple[str, dict[str, float]]]:
    keys = [str(c) for c in model.classes_]
    return [
        (str(label), dict(zip(keys, map(float, proba), strict=True)))
        for label, proba in zip(model.predict(rows), model.predict_proba(rows), strict=True)
    ]


def _answers(predictions: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    return [(str(p["prediction"]), p["probabilities"]) for p in predictions]


def _has_mlflow() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"shop": _pipeline(), "flowers": _flowers()}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]
) -> Iterator[tuple[MlserveProcess, Path]]:
    root = tmp_path_factory.mktemp("mlflow")
    example = _table(4, seed=2)
    dirs = {
        "by-hand": write_by_hand(
            root / "by-hand", models["shop"], signature=SIGNATURE, example=_split(example)
        ),
        # a float-matrix model, cloudpickled, with a records example and named double columns
        "flowers": write_by_hand(
            root / "flowers",
            models["flowers"],
            signature=[{"type": "double", "name": n, "required": True} for n in IRIS_FEATURES],
            example=[dict(zip(IRIS_FEATURES, row, strict=True)) for row in FLOWERS[:2]],
            example_info={"artifact_path": "input_example.json", "type": "json_object"},
            serialization="cloudpickle",
            run_id=None,
        ),
    }
    if _has_mlflow():  # else test_a_directory_written_by_mlflow skips (a failure in CI)
        dirs["by-mlflow"] = write_with_mlflow(
            root / "by-mlflow", models["shop"], example, serialization_format="cloudpickle"
        )
    registry = root / "registry"
    for name, path in dirs.items():
        result = CliRunner().invoke(
            app, ["register", str(path), "--name", name, "--registry", str(registry), "--json"]
        )
        assert result.exit_code == 0, result.output
    with running(registry, root / "home") as server:
        yield server, registry


def _columns(meta: Any) -> dict[str, tuple[str, bool]]:
    return {c.name: (c.dtype, c.nullable) for c in meta.input_schema.columns or []}


def _check_served_shop(server: MlserveProcess, name: str, model: Any) -> None:
    rows = _table(30, seed=3)
    response = server.post("/api/predict/batch", {"records": _records(rows), "model": name})
    assert response.status_code == 200, response.text
    assert _answers(response.json()["predictions"]) == _expected(model, rows)
    for i in (0, 7):  # spend is missing in row 7
        one = {"features": _records(rows)[i], "model": name}
        response = server.post("/api/predict", one)
        assert response.status_code == 200, response.text
        assert _answers([response.json()]) == _expected(model, rows.iloc[[i]])


@pytest.mark.slow  # the module's real server
def test_a_hand_written_directory_records_its_signature_and_run_id(
    served: tuple[MlserveProcess, Path],
) -> None:
    _, path = served
    meta = Registry(path).resolve("by-hand")
    assert (meta.format, meta.artifact) == ("mlflow", "model.pkl")
    assert meta.tags == {"mlflow_run_id": RUN_ID}
    details = meta.format_details
    assert details["run_id"] == RUN_ID
    assert (details["flavor"], details["serialization_format"]) == ("sklearn", "pickle")
    assert details["mlflow_version"] == "2.17.2"
    assert _columns(meta) == TYPED
    assert meta.input_schema.dataframe is True
    city = (meta.input_schema.columns or [])[0]
    assert city.categories == ["lima", "oslo", "paris", "rome"]  # from the model's encoder


@pytest.mark.slow  # the module's real server
def test_a_hand_written_directory_serves_the_in_process_answers(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    _check_served_shop(server, "by-hand", models["shop"])
    info = server.get("/api/models/by-hand").json()
    assert [c["name"] for c in info["input_schema"]["columns"]] == COLUMNS


@pytest.mark.slow  # the module's real server
def test_a_float_matrix_model_takes_the_signature_names(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, path = served
    meta = Registry(path).resolve("flowers")
    assert meta.input_schema.feature_names == IRIS_FEATURES
    assert meta.format_details["serialization_format"] == "cloudpickle"
    assert meta.format_details["run_id"] is None
    assert "mlflow_run_id" not in meta.tags
    records = [dict(zip(IRIS_FEATURES, row, strict=True)) for row in FLOWERS]
    response = server.post("/api/predict/batch", {"records": records, "model": "flowers"})
    assert response.status_code == 200, response.text
    assert _answers(response.json()["predictions"]) == _expected(
        models["flowers"], np.array(FLOWERS)
    )


@pytest.mark.slow  # the module's real server
def test_a_directory_written_by_mlflow(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    pytest.importorskip("mlflow")  # in the test extra: MLSERVE_TEST_NO_SKIPS makes this fail
    server, path = served
    meta = Registry(path).resolve("by-mlflow")
    assert meta.format == "mlflow"
    assert meta.tags == {"mlflow_run_id": RUN_ID}
    assert meta.format_details["serialization_format"] == "cloudpickle"
    assert meta.format_details["run_id"] == RUN_ID
    assert _columns(meta) == TYPED
    _check_served_shop(server, "by-mlflow", models["shop"])


def test_a_skops_serialised_directory_written_by_mlflow_trusts_only_what_is_passed(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
) -> None:
    """MLflow's default serialisation (skops) is read like a .skops file: the types the MLmodel
    file lists as trusted are trusted only when the user passes them with --trust."""
    pytest.importorskip("mlflow")
    pytest.importorskip("skops")
    model, rows = _pipeline(), _table(20, seed=4)
    path = write_with_mlflow(
        tmp_path / "skops", model, rows.head(3), skops_trusted_types=["numpy.dtype"]
    )
    assert_user_error(cli("register", path, "--name", "shop"), "numpy.dtype", "--trust")
    assert registry.names() == []

    result = cli("register", path, "--name", "shop", "--trust", "numpy.dtype", "--json")
    assert result.exit_code == 0, result.stderr
    meta = registry.resolve("shop")
    assert (meta.format, meta.artifact) == ("mlflow", "model.skops")
    assert meta.format_details["serialization_format"] == "skops"
    loaded = registry.load(meta).estimator
    assert _expected(loaded, rows) == _expected(model, rows)


def test_another_flavour_is_refused_naming_it(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
) -> None:
    flavors = {
        "python_function": {"loader_module": "mlflow.pytorch", "model_path": "data"},
        "pytorch": {"model_data": "data", "pytorch_version": "2.4.0"},
    }
    path = write_by_hand(tmp_path / "torch", _flowers(), flavors=flavors)
    result = cli("register", path, "--name", "torch")
    assert_user_error(result, "'pytorch'", "not served", "sklearn flavour")
    assert "python_function" not in result.stderr
    assert registry.names() == []


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        # the example holds a string where the signature says double
        (
            {"example": {"columns": COLUMNS, "data": [["rome", True, 3, "lots"]]}},
            ["cannot predict its example", "spend", "float"],
        ),
        # the model itself fails on it: no imputer for visits
        (
            {"example": {"columns": COLUMNS, "data": [["rome", True, None, 12.5]]}},
            ["cannot predict its example", "missing values", "visits"],
        ),
        (
            {"signature": [*SIGNATURE[:3], {"type": "double", "name": "amount"}]},
            ["signature's columns", "amount", "the model's features"],
        ),
        (
            {"signature": [*SIGNATURE[:3], {"type": "datetime", "name": "spend"}]},
            ["column 'spend'", '"datetime"', "does not take"],
        ),
    ],
    ids=["mistyped-example", "unpredictable-example", "other-columns", "unsupported-type"],
)
def test_a_directory_the_model_cannot_serve_as_described_is_refused(
    cli: Callable[..., Result],
    registry: Registry,
    registry_path: Path,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
    change: dict[str, Any],
    fragments: list[str],
) -> None:
    given = {"signature": SIGNATURE, "example": _split(_table(3, seed=5)), **change}
    path = write_by_hand(tmp_path / "model", _pipeline(), **given)
    assert_user_error(cli("register", path, "--name", "shop"), *fragments)
    assert registry.names() == []
    assert not registry_path.exists() or not any(registry_path.rglob("model.*"))


def test_required_false_makes_a_column_nullable(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    signature = [{**s, "required": s["name"] != "visits"} for s in SIGNATURE]
    example = _split(_table(3, seed=6))
    path = write_by_hand(tmp_path / "model", _pipeline(), signature=signature, example=example)
    result = cli("register", path, "--name", "shop")
    assert result.exit_code == 0, result.stderr
    columns = _columns(registry.resolve("shop"))
    assert columns["visits"] == ("int", True)
    assert columns["member"] == ("bool", False)  # required, and one-hot encoded without gaps


def test_a_cloudpickled_model_without_cloudpickle_names_it(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_by_hand(tmp_path / "model", _flowers(), serialization="cloudpickle")
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # import cloudpickle fails
    result = cli("register", path, "--name", "flowers")
    assert_user_error(result, "cloudpickle, which is not installed", "mlserve-sklearn[mlflow]")
    assert registry.names() == []


def test_a_model_file_outside_the_directory_is_refused(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    flavors = {"sklearn": {"pickled_model": "../elsewhere.pkl", "serialization_format": "pickle"}}
    path = write_by_hand(tmp_path / "model", _flowers(), flavors=flavors)
    assert_user_error(cli("register", path, "--name", "flowers"), "outside the model directory")
