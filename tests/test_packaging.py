"""What pyproject.toml promises an installer: the distribution's name, a lean base install with
a floor on every dependency, extras that the install hints in the code and the docs name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
PROJECT: dict[str, Any] = PYPROJECT["project"]
NAME = "mlserve-sklearn"
BASE = {Requirement(text).name: Requirement(text) for text in PROJECT["dependencies"]}
# `pip install 'NAME[extra,...]'` in a hint, a doc or a Dockerfile ('.' installs a checkout).
INSTALL_HINT = re.compile(r"pip install (?:-e )?'([^'\[\s]+)\[([^\]]+)\]'")


def test_the_distribution_has_a_free_name_and_keeps_the_mlserve_command() -> None:
    """`mlserve` on the package index is an unrelated 2018 project: the distribution has its own
    name, while the command and the import name stay `mlserve`."""
    assert PROJECT["name"] == NAME
    assert PROJECT["scripts"] == {"mlserve": "mlserve.cli:main"}
    assert "mlserve" in PYPROJECT["tool"]["setuptools"]["packages"]


def test_the_base_install_leaves_out_the_aiohttp_engine_and_uvicorns_unused_extras() -> None:
    assert "aiohttp" not in BASE, "aiohttp serves only --engine aiohttp: the aiohttp extra"
    assert not BASE["uvicorn"].extras, "uvicorn[standard]: watchfiles, websockets, PyYAML"
    # What mlserve does use of uvicorn[standard]: the HTTP parser and the event loop.
    assert {"httptools", "uvloop"} <= BASE.keys()
    assert [str(r) for r in map(Requirement, PROJECT["optional-dependencies"]["aiohttp"])] == [
        "aiohttp>=3.9"
    ]


PUBLIC_EXTRAS = {k: v for k, v in PROJECT["optional-dependencies"].items() if k != "test"}


@pytest.mark.parametrize(
    "requirement", PROJECT["dependencies"] + [r for group in PUBLIC_EXTRAS.values() for r in group]
)
def test_every_dependency_has_a_floor(requirement: str) -> None:
    """A floor .ci/lowest-direct installs and proves; no upper bound (a library's caps would
    conflict with its users' other dependencies)."""
    specifiers = {s.operator for s in Requirement(requirement).specifier}
    assert specifiers == {">="}, requirement


def _hint_files() -> list[Path]:
    files = [REPO_ROOT / "README.md", REPO_ROOT / "SECURITY.md"]
    files += sorted((REPO_ROOT / "mlserve").rglob("*.py"))
    files += sorted((REPO_ROOT / "docs").glob("*.md"))
    files += sorted(p for p in (REPO_ROOT / "deploy").rglob("*") if p.is_file())
    return [path for path in files if path.suffix not in {".lock", ".json"}]


def test_every_install_hint_names_this_distribution_and_an_extra_it_has() -> None:
    """A hint naming `mlserve[...]` would install someone else's code from the index."""
    extras = PROJECT["optional-dependencies"].keys()
    hints = []
    for path in _hint_files():
        text = path.read_text("utf-8", errors="replace")
        for match in INSTALL_HINT.finditer(text):
            where = f"{path.relative_to(REPO_ROOT)}: {match[0]}"
            hints.append(where)
            assert match[1] in (NAME, "."), where
            for extra in match[2].split(","):
                assert extra.strip() in extras, where
    # The code's own hints: at least these extras are named where they are missing.
    named = {
        extra
        for hint in hints
        if hint.startswith("mlserve/")
        for extra in re.findall(r"\[(\w+)\]", hint)
    }
    assert {"aiohttp", "jwt", "mlflow", "onnx", "pandas", "redis", "skops"} <= named, hints


def test_the_metadata_an_index_shows() -> None:
    """License, classifiers (typed: mlserve ships py.typed), keywords, absolute URLs."""
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    license_text = (REPO_ROOT / "LICENSE").read_text("utf-8")
    assert license_text.startswith("MIT License") and "the mlserve authors" in license_text
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (REPO_ROOT / "mlserve" / "py.typed").is_file()
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # PEP 639
    assert PROJECT["keywords"]
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= PROJECT["urls"].keys()
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_the_changelog_keeps_a_changelog() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text("utf-8")
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    assert "\n## [Unreleased]\n" in text
    sections = re.findall(r"^### (\w+)$", text, flags=re.MULTILINE)
    assert sections and set(sections) <= {
        "Added",
        "Changed",
        "Deprecated",
        "Removed",
        "Fixed",
        "Security",
    }
