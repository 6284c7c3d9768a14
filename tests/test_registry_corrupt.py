"""Corrupt registry files (issue 18, item 7): a bad metadata.json or aliases.json is named, with
its problem, in one line (never the file's contents), and only its own model is affected: the
registry, `mlserve models list` and GET /api/models list the healthy models and mark the broken
one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings
from typer.testing import Result

from mlserve.errors import RegistryError
from mlserve.registry import Registry
from mlserve.server.app import create_app

SECRET = "do-not-echo-me"  # in the corrupt files: it must never reach a message
BAD_METADATA = {
    "not JSON": "{" + SECRET * 50,
    "not an object": json.dumps([SECRET]),
    "missing fields": json.dumps({"name": SECRET, "version": 1}),
    "wrong type": "WRONG-TYPE",  # a valid document with one field of the wrong type
}
BAD_ALIASES = {
    "not JSON": "{" + SECRET,
    "not an object": json.dumps([SECRET]),
    "not a number": json.dumps({"production": SECRET}),
}


def damage_metadata(root: Path, name: str, version: int, kind: str) -> Path:
    path = root / name / "versions" / str(version) / "metadata.json"
    if kind == "wrong type":
        data = json.loads(path.read_text())
        data["size_bytes"] = SECRET
        path.write_text(json.dumps(data))
    else:
        path.write_text(BAD_METADATA[kind])
    return path


def damage_aliases(root: Path, name: str, kind: str) -> Path:
    path = root / name / "aliases.json"
    path.write_text(BAD_ALIASES[kind])
    return path


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message, message
    assert SECRET not in message, message
    assert len(message) < 300, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.fixture
def three(registry: Registry, classifier: Any) -> Registry:
    """good:1, meta:1, ali:1, each @production."""
    for name in ("good", "meta", "ali"):
        registry.register_estimator(classifier, name=name, aliases=["production"])
    return registry


# ---------------------------------------------------------------------------- the registry
@pytest.mark.parametrize("kind", sorted(BAD_METADATA))
def test_a_corrupt_metadata_file_is_named_with_its_problem_in_one_line(
    three: Registry, kind: str
) -> None:
    damage_metadata(three.root, "meta", 1, kind)
    with pytest.raises(RegistryError) as raised:
        three.resolve("meta")
    assert raised.value.code == "registry_corrupt"
    assert_one_line(raised.value.message, "meta/versions/1/metadata.json", "corrupt")


@pytest.mark.parametrize("kind", sorted(BAD_ALIASES))
def test_a_corrupt_aliases_file_is_named_with_its_problem_in_one_line(
    three: Registry, kind: str
) -> None:
    damage_aliases(three.root, "ali", kind)
    with pytest.raises(RegistryError) as raised:
        three.aliases("ali")
    assert raised.value.code == "registry_corrupt"
    assert_one_line(raised.value.message, "ali/aliases.json", "corrupt")


def test_list_models_keeps_the_healthy_models_and_marks_the_broken_ones(three: Registry) -> None:
    damage_metadata(three.root, "meta", 1, "not JSON")
    damage_aliases(three.root, "ali", "not JSON")
    listed = {m.name: m for m in three.list_models()}
    assert set(listed) == {"good", "meta", "ali"}
    assert listed["good"].error is None and listed["good"].aliases == {"production": 1}
    assert listed["meta"].versions == [1] and listed["ali"].versions == [1]
    assert_one_line(listed["meta"].error or "", "meta/versions/1/metadata.json")
    assert_one_line(listed["ali"].error or "", "ali/aliases.json")
    assert listed["ali"].task == listed["good"].task  # what can be read is still shown


# ---------------------------------------------------------------------------- the CLI
def test_models_list_table_lists_the_healthy_and_marks_the_broken(
    cli: Callable[..., Result], three: Registry
) -> None:
    damage_metadata(three.root, "meta", 1, "missing fields")
    damage_aliases(three.root, "ali", "not a number")
    result = cli("models", "list")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    for name in ("good", "meta", "ali"):
        assert name in result.stdout
    assert "production→1" in result.stdout  # good's aliases
    assert "broken" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert any("meta/versions/1/metadata.json" in line for line in lines), lines
    assert any("ali/aliases.json" in line for line in lines), lines
    assert "Traceback" not in result.stderr


def test_models_list_json_marks_the_broken_with_the_reason(
    cli: Callable[..., Result], three: Registry
) -> None:
    damage_metadata(three.root, "meta", 1, "wrong type")
    damage_aliases(three.root, "ali", "not an object")
    result = cli("models", "list", "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    data = {m["name"]: m for m in json.loads(result.stdout)}
    assert set(data) == {"good", "meta", "ali"}
    assert data["good"]["error"] is None and data["good"]["aliases"] == {"production": 1}
    assert_one_line(data["meta"]["error"], "meta/versions/1/metadata.json", "size_bytes")
    assert_one_line(data["ali"]["error"], "ali/aliases.json")


# ---------------------------------------------------------------------------- the server
def test_server_names_a_corrupt_file_in_one_line_and_lists_the_healthy_models(
    tmp_path: Path,
) -> None:
    settings = populated_settings(tmp_path)  # sentiment:1 and iris:1, @production
    root = settings.registry_path
    damage_metadata(root, "iris", 1, "missing fields")
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/models/iris")
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert error["code"] == "registry_corrupt"
        assert_one_line(error["message"], "iris/versions/1/metadata.json", "corrupt")
        assert str(root) not in error["message"]

        listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert set(listed) == {"sentiment", "iris"}
        assert listed["sentiment"]["status"] == "loaded"
        assert listed["iris"]["status"] == "failed"
        assert_one_line(listed["iris"]["error"], "iris/versions/1/metadata.json")

        # A served model whose aliases file goes bad later: still listed, and marked.
        damage_aliases(root, "sentiment", "not JSON")
        listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert set(listed) == {"sentiment", "iris"}
        assert_one_line(listed["sentiment"]["error"], "sentiment/aliases.json")
        assert listed["sentiment"]["versions"] == [1]
        response = client.get("/api/models/sentiment")
        assert response.status_code == 500 and "\n" not in response.text
        assert response.json()["error"]["code"] == "registry_corrupt"
