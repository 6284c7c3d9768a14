"""`mlserve register`: validate first; a bad input is exit 2 and leaves the registry unchanged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from mlserve.registry import Registry


def tree(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_register_prints_the_new_reference(
    cli: Callable[..., Result], model_file: Path, registry: Registry
) -> None:
    result = cli("register", model_file, "--name", "clf")
    assert result.exit_code == 0, result.stderr
    assert "clf:1" in result.stdout
    assert registry.versions("clf") == [1]
    again = cli("register", model_file, "--name", "clf")
    assert "clf:2" in again.stdout


def test_register_json_prints_the_recorded_metadata(
    cli: Callable[..., Result], model_file: Path, tmp_path: Path, registry: Registry
) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.91, "notes": "offline eval"}))
    result = cli(
        "register",
        model_file,
        "--name",
        "clf",
        "--alias",
        "production",
        "--alias",
        "staging",
        "--description",
        "first cut",
        "--tag",
        "team=ml",
        "--tag",
        "data = 2024-q1 ",
        "--metrics",
        metrics,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["version"] == 1
    assert data["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert data["description"] == "first cut"
    assert data["tags"] == {"team": "ml", "data": "2024-q1"}
    assert data["metrics"] == {"accuracy": 0.91, "notes": "offline eval"}
    assert registry.aliases("clf") == {"production": 1, "staging": 1}
    assert registry.metadata("clf", 1).model_dump(mode="json") == data


def test_register_task_option_overrides_detection(
    cli: Callable[..., Result], tmp_path: Path, save_joblib: Callable[..., Path]
) -> None:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=2, n_init=1, random_state=0).fit([[0.0], [1.0], [9.0], [10.0]])
    path = save_joblib(model, tmp_path / "kmeans.joblib")
    detected = cli("register", path, "--name", "km", "--json")
    assert detected.exit_code == 0, detected.stderr
    assert json.loads(detected.stdout)["task"] == "clustering"
    result = cli("register", path, "--name", "km", "--task", "tabular-classification", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["task"] == "tabular-classification"


@pytest.fixture
def bad_model_files(tmp_path: Path, save_joblib: Callable[..., Path]) -> dict[str, Path]:
    from sklearn.linear_model import LogisticRegression

    empty = tmp_path / "empty.joblib"
    empty.write_bytes(b"")
    text = tmp_path / "readme.txt"
    text.write_text("This is a text file, not a model.\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    return {
        "nonexistent": tmp_path / "missing.joblib",
        "directory": folder,
        "empty": empty,
        "text": text,
        "dict": save_joblib({"coef": [1.0, 2.0]}, tmp_path / "dict.joblib"),
        "class": save_joblib(LogisticRegression, tmp_path / "class.joblib"),
        "unfitted": save_joblib(LogisticRegression(), tmp_path / "unfitted.joblib"),
    }


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("nonexistent", "does not exist"),
        ("directory", "is a directory"),
        ("empty", "is empty"),
        ("text", "is not a loadable joblib model"),
        ("dict", "holds a dict, not an estimator"),
        ("class", "holds the class LogisticRegression"),
        ("unfitted", "is not fitted"),
    ],
)
def test_register_refuses_bad_file_with_exit_2_and_registry_unchanged(
    cli: Callable[..., Result],
    registry: Registry,
    model_file: Path,
    bad_model_files: dict[str, Path],
    assert_user_error: Callable[..., None],
    case: str,
    fragment: str,
) -> None:
    registry.register(model_file, name="m")
    before = tree(registry.root)
    result = cli("register", bad_model_files[case], "--name", "m")
    assert_user_error(result, fragment)
    assert result.stdout == ""
    assert tree(registry.root) == before


def test_register_refuses_bad_file_without_creating_a_registry(
    cli: Callable[..., Result], registry: Registry, bad_model_files: dict[str, Path]
) -> None:
    result = cli("register", bad_model_files["dict"], "--name", "m")
    assert result.exit_code == 2
    assert not registry.root.exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--tag", "no-equals-sign"], "invalid --tag 'no-equals-sign'"),
        (["--tag", "=value"], "invalid --tag '=value'"),
        (["--name", "bad name!"], "invalid model name"),
        (["--alias", "Production"], "invalid alias 'Production'"),
        (["--alias", "42"], "invalid alias '42'"),
        (["--task", "ranking"], "invalid --task 'ranking'"),
    ],
    ids=["tag-without-equals", "tag-without-key", "name", "alias-case", "alias-digits", "task"],
)
def test_register_refuses_bad_options(
    cli: Callable[..., Result],
    model_file: Path,
    registry: Registry,
    assert_user_error: Callable[..., None],
    extra: list[str],
    fragment: str,
) -> None:
    args = ["register", model_file, *extra]
    if "--name" not in extra:
        args += ["--name", "m"]
    assert_user_error(cli(*args), fragment)
    assert not registry.root.exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ("[0.9, 0.8]", "must hold a JSON object"),
        (b"\xff\xfe{}", "cannot read metrics file"),
    ],
    ids=["missing", "invalid-json", "not-an-object", "not-utf8"],
)
def test_register_refuses_bad_metrics_file(
    cli: Callable[..., Result],
    model_file: Path,
    tmp_path: Path,
    registry: Registry,
    assert_user_error: Callable[..., None],
    content: str | bytes | None,
    fragment: str,
) -> None:
    metrics = tmp_path / "metrics.json"
    if isinstance(content, bytes):
        metrics.write_bytes(content)
    elif content is not None:
        metrics.write_text(content)
    result = cli("register", model_file, "--name", "m", "--metrics", metrics)
    assert_user_error(result, "metrics.json", fragment)
    assert not registry.root.exists()


def test_register_in_a_real_process(
    run_mlserve: Callable[..., Any], model_file: Path, registry: Registry
) -> None:
    proc = run_mlserve("register", model_file, "--name", "clf", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"] == 1
    refused = run_mlserve("register", model_file.parent, "--name", "clf")
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error:")
    assert "Traceback" not in refused.stderr
    assert registry.versions("clf") == [1]
