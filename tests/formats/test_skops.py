"""skops files (.skops): registered through the CLI with format "skops" and served by a real
server giving exactly the in-process answers; a type skops does not trust is refused at
register, naming it, unless accepted with --trust, and the accepted types are what loads."""

from __future__ import annotations

import io
import json
import operator
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.data import FLOWERS, iris
from support.servers import MlserveProcess, running
from typer.testing import CliRunner, Result

from mlserve.cli import app
from mlserve.errors import IntegrityError
from mlserve.registry import Registry

sio = pytest.importorskip("skops.io")
pd = pytest.importorskip("pandas")

# skops trusts scikit-learn's and numpy's types; a plain Python function is not one of them.
ABS = "_operator.abs"
NEG = "_operator.neg"
ROWS = np.array(FLOWERS)


def _plain() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    return LogisticRegression(max_iter=1000).fit(x, y)


def _table(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo"], n).astype(object),
            "visits": rng.integers(0, 30, n),
            "spend": rng.normal(50.0, 15.0, n).round(2),
        }
    )
    return frame


def _frame_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _table(200, seed=1)
    target = np.where((frame["visits"] > 12) & (frame["city"] != "oslo"), "buy", "skip")
    prep = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("num", StandardScaler(), ["visits", "spend"]),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=500)).fit(frame, target)


def _untrusted(*funcs: Callable[[Any], Any]) -> Any:
    """LogisticRegression on iris after FunctionTransformers of plain Python functions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = iris()
    steps = [FunctionTransformer(f) for f in funcs]
    return make_pipeline(*steps, LogisticRegression(max_iter=1000)).fit(x, y)


def _dump(model: Any, path: Path) -> Path:
    sio.dump(model, path)
    return path


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]  # fmt: skip


def _expected(model: Any, rows: Any) -> list[tuple[str, dict[str, float]]]:
    keys = [str(c) for c in model.classes_]
    return [
        (str(label), dict(zip(keys, map(float, proba), strict=True)))
        for label, proba in zip(model.predict(rows), model.predict_proba(rows), strict=True)
    ]


def _answers(predictions: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    return [(p["prediction"], p["probabilities"]) for p in predictions]


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"plain": _plain(), "shop": _frame_pipeline(), "abs": _untrusted(operator.abs)}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]
) -> Iterator[tuple[MlserveProcess, Path]]:
    root = tmp_path_factory.mktemp("skops")
    registry = root / "registry"
    (root / "example.json").write_text(json.dumps(_records(_table(3, seed=2))))
    extra = {"shop": ["--example", root / "example.json"], "abs": ["--trust", ABS]}
    for name, model in models.items():
        args = ["register", _dump(model, root / f"{name}.skops"), "--name", name,
                "--registry", registry, "--json", *extra.get(name, [])]  # fmt: skip
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    with running(registry, root / "home") as server:
        yield server, registry


@pytest.mark.slow  # the module's real server
def test_the_metadata_records_the_skops_format(served: tuple[MlserveProcess, Path]) -> None:
    _, path = served
    registry = Registry(path)
    for name, trusted in (("plain", []), ("shop", []), ("abs", [ABS])):
        meta = registry.resolve(name)
        assert (meta.format, meta.artifact) == ("skops", "model.skops")
        assert meta.format_details == {"trusted": trusted}
        assert registry.artifact_path(meta).name == "model.skops"
    columns = registry.resolve("shop").input_schema.columns or []
    assert {c.name: c.dtype for c in columns} == {"city": "str", "visits": "int", "spend": "float"}


@pytest.mark.slow  # the module's real server
def test_a_float_matrix_model_serves_its_in_process_answers(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    for name in ("plain", "abs"):
        response = server.post("/api/predict/batch", {"records": FLOWERS, "model": name})
        assert response.status_code == 200, response.text
        assert _answers(response.json()["predictions"]) == _expected(models[name], ROWS)
        response = server.post("/api/predict", {"features": FLOWERS[1], "model": name})
        assert response.status_code == 200, response.text
        assert _answers([response.json()]) == _expected(models[name], ROWS[1:2])


@pytest.mark.slow  # the module's real server
def test_a_dataframe_pipeline_serves_its_in_process_answers(
    served: tuple[MlserveProcess, Path], models: dict[str, Any]
) -> None:
    server, _ = served
    rows = _table(25, seed=3)
    response = server.post("/api/predict/batch", {"records": _records(rows), "model": "shop"})
    assert response.status_code == 200, response.text
    assert _answers(response.json()["predictions"]) == _expected(models["shop"], rows)
    bad = server.post(
        "/api/predict", {"features": {**_records(rows)[0], "city": 5}, "model": "shop"}
    )
    assert bad.status_code == 422, bad.text


def test_an_untrusted_type_is_refused_naming_it_and_nothing_is_written(
    cli: Callable[..., Result],
    registry: Registry,
    registry_path: Path,
    tmp_path: Path,
    assert_user_error: Callable[..., None],
) -> None:
    path = _dump(_untrusted(operator.abs, operator.neg), tmp_path / "custom.skops")
    result = cli("register", path, "--name", "custom")
    assert_user_error(result, ABS, NEG, "--trust TYPE", "runs its code")
    # trusting one names only the other
    result = cli("register", path, "--name", "custom", "--trust", ABS)
    assert_user_error(result, NEG)
    assert ABS not in result.stderr
    assert registry.names() == []
    assert not registry_path.exists() or not any(registry_path.rglob("model.*"))

    result = cli("register", path, "--name", "custom", "--trust", NEG, "--trust", ABS, "--json")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout)
    assert (meta["format"], meta["format_details"]) == ("skops", {"trusted": [ABS, NEG]})


def test_load_trusts_exactly_the_recorded_types(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    model = _untrusted(operator.abs)
    path = _dump(model, tmp_path / "abs.skops")
    result = cli("register", path, "--name", "abs", "--trust", ABS)
    assert result.exit_code == 0, result.stderr
    assert f"format skops, trusting {ABS}" in result.stdout
    meta = registry.resolve("abs")
    loaded = registry.load(meta).estimator
    assert (loaded.predict(ROWS) == model.predict(ROWS)).all()
    untrusting = meta.model_copy(update={"format_details": {"trusted": []}})
    with pytest.raises(IntegrityError, match="cannot be loaded"):
        registry.load(untrusting)


def test_a_trusted_type_not_in_the_file_is_not_recorded(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    path = _dump(_plain(), tmp_path / "plain.skops")
    result = cli("register", path, "--name", "plain", "--trust", ABS)
    assert result.exit_code == 0, result.stderr
    assert registry.resolve("plain").format_details == {"trusted": []}


def test_a_file_that_is_not_skops_is_refused(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip file")
    assert_user_error(cli("register", path, "--name", "m"), "is not a loadable skops model")


def test_the_saved_scikit_learn_version_is_recorded(
    cli: Callable[..., Result], registry: Registry, tmp_path: Path
) -> None:
    """skops keeps each estimator's `_sklearn_version`; an older one is what the metadata says
    (as for a joblib file), so version notes can name it."""
    original = zipfile.ZipFile(io.BytesIO(sio.dumps(_plain())))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as doctored:
        for member in original.namelist():
            data = original.read(member)
            if member == "schema.json":
                schema = json.loads(data)
                schema["content"]["content"]["_sklearn_version"]["content"] = '"1.3.0"'
                data = json.dumps(schema).encode()
            doctored.writestr(member, data)
    path = tmp_path / "old.skops"
    path.write_bytes(out.getvalue())
    result = cli("register", path, "--name", "old")
    assert result.exit_code == 0, result.stderr
    assert registry.resolve("old").sklearn_version == "1.3.0"


def test_without_skops_the_error_names_the_extra(
    cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    path = _dump(_plain(), tmp_path / "plain.skops")
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    assert_user_error(cli("register", path, "--name", "m"), "pip install 'mlserve-sklearn[skops]'")
