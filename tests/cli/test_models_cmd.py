"""`mlserve models list | show | alias | unalias | delete`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from mlserve.registry import Registry


@pytest.fixture
def populated(registry: Registry, classifier: Any, regressor: Any) -> Registry:
    """m:1 (production), m:2, reg:1."""
    registry.register_estimator(
        classifier, name="m", aliases=["production"], metrics={"accuracy": 0.75}
    )
    registry.register_estimator(classifier, name="m", description="second try")
    registry.register_estimator(regressor, name="reg")
    return registry


def test_list_json_shows_models_versions_and_aliases(
    cli: Callable[..., Result], populated: Registry
) -> None:
    result = cli("models", "list", "--json")
    assert result.exit_code == 0, result.stderr
    data = {m["name"]: m for m in json.loads(result.stdout)}
    assert set(data) == {"m", "reg"}
    assert data["m"]["versions"] == [1, 2]
    assert data["m"]["latest_version"] == 2
    assert data["m"]["aliases"] == {"production": 1}
    assert data["reg"]["task"] == "tabular-regression"


def test_list_table_names_every_model(cli: Callable[..., Result], populated: Registry) -> None:
    result = cli("models", "list")
    assert result.exit_code == 0, result.stderr
    assert "m" in result.stdout and "reg" in result.stdout
    assert "production→1" in result.stdout


def test_list_on_an_empty_registry(cli: Callable[..., Result]) -> None:
    result = cli("models", "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "is empty" in result.stderr
    as_json = cli("models", "list", "--json")
    assert json.loads(as_json.stdout) == []


@pytest.mark.parametrize(("ref", "version"), [("m", 1), ("m:2", 2), ("m@production", 1)])
def test_show_json_resolves_references(
    cli: Callable[..., Result], populated: Registry, ref: str, version: int
) -> None:
    result = cli("models", "show", ref, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "m"
    assert data["version"] == version
    assert data["aliases"] == (["production"] if version == 1 else [])
    assert data["warnings"] == []
    stored = populated.artifact_path(populated.metadata("m", version))
    assert data["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()


def test_show_panel_has_sha256_and_metrics(cli: Callable[..., Result], populated: Registry) -> None:
    result = cli("models", "show", "m:1")
    assert result.exit_code == 0, result.stderr
    assert populated.metadata("m", 1).sha256 in result.stdout
    assert "accuracy" in result.stdout and "0.7500" in result.stdout


def test_show_warns_about_another_sklearn_version(
    cli: Callable[..., Result], populated: Registry
) -> None:
    import sklearn

    path = populated.artifact_path(populated.metadata("m", 2)).with_name("metadata.json")
    data = json.loads(path.read_text())
    data["sklearn_version"] = "0.0.1"
    path.write_text(json.dumps(data))

    as_json = json.loads(cli("models", "show", "m:2", "--json").stdout)
    [warning] = as_json["warnings"]
    assert "0.0.1" in warning and sklearn.__version__ in warning

    table = cli("models", "show", "m:2")
    assert table.exit_code == 0
    assert "warning" in table.stderr and "0.0.1" in table.stderr


def test_show_unknown_model_or_version_is_not_found(
    cli: Callable[..., Result], populated: Registry, assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("models", "show", "ghost"), "'ghost' is not in the registry", code=1)
    assert_user_error(cli("models", "show", "m:9"), "has no version 9", code=1)
    assert_user_error(cli("models", "show", "m@canary"), "no alias 'canary'", code=1)


@pytest.mark.parametrize("ref", ["m:0", "m:x", "bad name", "m@Prod", "../m"])
def test_show_malformed_reference_exits_2(
    cli: Callable[..., Result],
    populated: Registry,
    assert_user_error: Callable[..., None],
    ref: str,
) -> None:
    assert_user_error(cli("models", "show", ref), "invalid")


def test_alias_then_unalias(cli: Callable[..., Result], populated: Registry) -> None:
    result = cli("models", "alias", "m", "2", "production")
    assert result.exit_code == 0, result.stderr
    assert "m@production" in result.stdout
    assert populated.aliases("m") == {"production": 2}

    result = cli("models", "unalias", "m", "production")
    assert result.exit_code == 0, result.stderr
    assert "was m:2" in result.stdout
    assert populated.aliases("m") == {}


def test_alias_errors(
    cli: Callable[..., Result], populated: Registry, assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("models", "alias", "m", "9", "staging"), "no version 9", code=1)
    assert_user_error(cli("models", "alias", "m", "1", "Bad Alias"), "invalid alias")
    assert_user_error(cli("models", "unalias", "m", "canary"), "no alias 'canary'", code=1)
    assert populated.aliases("m") == {"production": 1}


def test_delete_aliased_version_needs_force(
    cli: Callable[..., Result], populated: Registry, assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("models", "delete", "m:1"), "production", "--force")
    assert populated.versions("m") == [1, 2]

    result = cli("models", "delete", "m:1", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "m", "deleted_versions": [1]}
    assert populated.versions("m") == [2]
    assert populated.aliases("m") == {}


def test_delete_unaliased_version_and_whole_model(
    cli: Callable[..., Result], populated: Registry
) -> None:
    result = cli("models", "delete", "m:2")
    assert result.exit_code == 0, result.stderr
    assert "deleted m version(s) 2" in result.stdout
    result = cli("models", "delete", "reg")
    assert result.exit_code == 0, result.stderr
    assert populated.names() == ["m"]


def test_registry_flag_and_env_choose_the_registry(
    cli: Callable[..., Result],
    tmp_path: Path,
    classifier: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = Registry(tmp_path / "other")
    other.register_estimator(classifier, name="elsewhere")

    by_flag = json.loads(cli("models", "list", "--json", "--registry", other.root).stdout)
    assert [m["name"] for m in by_flag] == ["elsewhere"]
    assert json.loads(cli("models", "list", "--json").stdout) == []

    monkeypatch.setenv("MLSERVE_REGISTRY__PATH", str(other.root))
    by_env = json.loads(cli("models", "list", "--json").stdout)
    assert [m["name"] for m in by_env] == ["elsewhere"]
