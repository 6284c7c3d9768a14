"""XGBoost and LightGBM through their scikit-learn wrappers: `mlserve register` records the task
and classes, and a real server answers exactly what the estimator predicts in-process, for
models fitted on a float matrix and on a DataFrame. Native Booster objects and native model files
are refused (exit 2) with the wrapper to register instead, and nothing is written.

Both packages are optional test dependencies (the `test` extra); CI installs them and
MLSERVE_TEST_NO_SKIPS=1 turns a missing one into a failure rather than a skip."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from support.servers import MlserveProcess, running
from typer.testing import CliRunner, Result

from mlserve.registry import Registry

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.slow  # one real server for the module

COLUMNS = ["age", "income", "score", "tenure"]
N_ROWS = 16  # rows sent to the server per model


def _data() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A float matrix and targets: binary ints, three string classes, a real value."""
    rng = np.random.default_rng(14)
    x = rng.normal(size=(150, len(COLUMNS)))
    targets = {
        "binary": (x[:, 0] + x[:, 1] > 0).astype(int),
        "three": np.array(["low", "mid", "high"])[(x[:, 0] > 0).astype(int) + (x[:, 2] > 0.5)],
        "value": x @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=len(x)),
    }
    return x, targets


# name: (constructor, target, task, classes)
ESTIMATORS: dict[str, tuple[Callable[[], Any], str, str, list[Any] | None]] = {
    "xgb-classifier": (
        lambda: xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1),
        "binary",
        "tabular-classification",
        [0, 1],
    ),
    "xgb-regressor": (
        lambda: xgboost.XGBRegressor(n_estimators=10, max_depth=3, n_jobs=1),
        "value",
        "tabular-regression",
        None,
    ),
    "lgbm-classifier": (
        lambda: lightgbm.LGBMClassifier(n_estimators=10, n_jobs=1, verbose=-1),
        "three",
        "tabular-classification",
        ["high", "low", "mid"],
    ),
    "lgbm-regressor": (
        lambda: lightgbm.LGBMRegressor(n_estimators=10, n_jobs=1, verbose=-1),
        "value",
        "tabular-regression",
        None,
    ),
}
CASES = [f"{name}-{shape}" for name in ESTIMATORS for shape in ("matrix", "dataframe")]


@dataclass
class Registered:
    estimator: Any
    dataframe: bool
    result: Result
    task: str
    classes: list[Any] | None


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boosters")


@pytest.fixture(scope="module")
def registered(root: Path) -> dict[str, Registered]:
    """Every case fitted, saved with joblib and registered through the CLI (into one registry)."""
    from mlserve.cli import app

    x, targets = _data()
    frame = pd.DataFrame(x, columns=COLUMNS)
    runner = CliRunner()
    out: dict[str, Registered] = {}
    loggers = [logging.getLogger(name) for name in ("mlserve", "uvicorn", "uvicorn.error")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLSERVE_HOME", str(root / "home"))
            mp.chdir(root)
            for case in CASES:
                name, shape = case.rsplit("-", 1)
                make, target, task, classes = ESTIMATORS[name]
                dataframe = shape == "dataframe"
                estimator = make().fit(frame if dataframe else x, targets[target])
                path = root / f"{case}.joblib"
                joblib.dump(estimator, path)
                registry = str(root / "registry")
                result = runner.invoke(
                    app, ["register", str(path), "--name", case, "--registry", registry, "--json"]
                )
                out[case] = Registered(estimator, dataframe, result, task, classes)
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    return out


@pytest.fixture(scope="module")
def server(registered: dict[str, Registered], root: Path) -> Iterator[MlserveProcess]:
    """One real `mlserve serve` over the registry the CLI filled."""
    with running(root / "registry", root / "server-home") as started:
        yield started


def _rows() -> np.ndarray:
    return np.random.default_rng(41).normal(size=(N_ROWS, len(COLUMNS)))


@pytest.mark.parametrize("case", CASES)
def test_register_records_task_and_classes(registered: dict[str, Registered], case: str) -> None:
    entry = registered[case]
    assert entry.result.exit_code == 0, (entry.result.stdout, entry.result.stderr)
    meta = json.loads(entry.result.stdout)
    assert meta["version"] == 1
    assert meta["task"] == entry.task
    assert meta["classes"] == entry.classes
    assert meta["estimator"] == type(entry.estimator).__name__
    if entry.dataframe:
        assert meta["input_schema"]["feature_names"] == COLUMNS


@pytest.mark.parametrize("case", CASES)
def test_server_answers_what_the_estimator_predicts(
    registered: dict[str, Registered], server: MlserveProcess, case: str
) -> None:
    entry = registered[case]
    assert entry.result.exit_code == 0, entry.result.stderr
    rows = _rows()
    local_input = pd.DataFrame(rows, columns=COLUMNS) if entry.dataframe else rows
    records: list[Any] = [
        dict(zip(COLUMNS, row, strict=True)) if entry.dataframe else row for row in rows.tolist()
    ]
    expected = entry.estimator.predict(local_input).tolist()

    batch = server.post("/api/predict/batch", {"records": records, "model": case})
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    single = server.post("/api/predict", {"features": records[0], "model": case})
    assert single.status_code == 200, single.text
    answers.insert(0, single.json())
    expected.insert(0, expected[0])

    assert [a["prediction"] for a in answers] == expected
    if entry.classes is None:
        assert all(a["probabilities"] is None for a in answers)
        return
    proba = entry.estimator.predict_proba(local_input).tolist()
    proba.insert(0, proba[0])
    keys = [str(c) for c in entry.estimator.classes_]
    assert [a["probabilities"] for a in answers] == [dict(zip(keys, p, strict=True)) for p in proba]


# ---------------------------------------------------------------------------- native boosters
def _native_xgboost() -> Any:
    x, targets = _data()
    return (
        xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1)
        .fit(x, targets["binary"])
        .get_booster()
    )


def _native_lightgbm() -> Any:
    x, targets = _data()
    return (
        lightgbm.LGBMRegressor(n_estimators=5, n_jobs=1, verbose=-1)
        .fit(x, targets["value"])
        .booster_
    )


WRAPPERS = {
    "xgboost": ("XGBoost native Booster", "xgboost.XGBClassifier or XGBRegressor"),
    "lightgbm": ("LightGBM native Booster", "lightgbm.LGBMClassifier or LGBMRegressor"),
}


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_a_pickled_native_booster_is_refused(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
    library: str,
) -> None:
    booster = _native_xgboost() if library == "xgboost" else _native_lightgbm()
    assert type(booster).__name__ == "Booster"
    path = tmp_path / "booster.joblib"
    joblib.dump(booster, path)
    result = cli("register", path, "--name", "native")
    assert_user_error(result, *WRAPPERS[library], "joblib.dump")
    assert result.stdout == ""
    assert not registry.root.exists()


@pytest.mark.parametrize(
    ("library", "filename"),
    [("xgboost", "model.json"), ("xgboost", "model.ubj"), ("lightgbm", "model.txt")],
)
def test_a_native_model_file_is_refused(
    cli: Callable[..., Result],
    registry: Registry,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
    library: str,
    filename: str,
) -> None:
    booster = _native_xgboost() if library == "xgboost" else _native_lightgbm()
    path = tmp_path / filename
    booster.save_model(str(path))
    result = cli("register", path, "--name", "native")
    assert_user_error(result, str(path), *WRAPPERS[library], "joblib.dump")
    assert "not a loadable joblib model" not in result.stderr
    assert result.stdout == ""
    assert not registry.root.exists()


def test_the_advice_for_an_xgboost_model_file_works(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    """The refusal says to load the file into the wrapper: done, it registers and predicts."""
    booster = _native_xgboost()
    native = tmp_path / "model.ubj"
    booster.save_model(str(native))
    assert "load_model" in cli("register", native, "--name", "native").stderr
    wrapper = xgboost.XGBClassifier()
    wrapper.load_model(str(native))
    path = tmp_path / "model.joblib"
    joblib.dump(wrapper, path)
    result = cli("register", path, "--name", "native", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["classes"] == [0, 1]
    assert registry.versions("native") == [1]
