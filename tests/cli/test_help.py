"""`mlserve --help` and `--version`: fast, complete, and free of heavy imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.probe import HEAVY, imported
from typer.testing import Result

import mlserve


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--help",),
        ("train", "--help"),
        ("register", "--help"),
        ("models", "--help"),
        ("models", "show", "--help"),
        ("config", "show", "--help"),
        ("rollout", "--help"),
        ("rollout", "status", "--help"),
    ],
    ids=lambda a: " ".join(a) or "import-only",
)
def test_help_does_not_import_sklearn_or_fastapi(args: tuple[str, ...]) -> None:
    heavy, code = imported(HEAVY, *args)
    assert heavy == ""
    assert code == "0"


def test_the_probe_sees_sklearn_when_a_command_needs_it(tmp_path: Path) -> None:
    # Guards the test above: a command that trains does import scikit-learn, and the probe sees it.
    data = tmp_path / "one-class.csv"
    data.write_text("text,label\n" + "".join(f"sentence {i},pos\n" for i in range(8)))
    heavy, code = imported(
        HEAVY, "train", "--data", str(data), "--target", "label", "--text-column", "text"
    )
    assert code == "2"  # a single class: refused after scikit-learn was imported
    assert "sklearn" in heavy.split(",")


def test_version_flag_prints_the_version(cli: Callable[..., Result]) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mlserve {mlserve.__version__}"


def test_help_lists_every_command_with_its_summary(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("train", "register", "models", "config", "rollout"):
        assert command in result.stdout
    assert "Train a model" in result.stdout
    assert "Validate a joblib model file" in result.stdout


@pytest.mark.parametrize(
    "group", [("models",), ("config",), ("rollout",)], ids=lambda g: " ".join(g)
)
def test_group_help_lists_subcommands(cli: Callable[..., Result], group: tuple[str]) -> None:
    result = cli(*group, "--help")
    assert result.exit_code == 0
    expected = {
        "models": ("list", "show", "alias", "unalias", "delete"),
        "config": ("init", "show"),
        "rollout": ("start", "status", "abort"),
    }[group[0]]
    for sub in expected:
        assert sub in result.stdout


def test_python_dash_m_mlserve_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlserve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    assert "register" in proc.stdout

    version = subprocess.run(
        [sys.executable, "-m", "mlserve", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.stdout.strip() == f"mlserve {mlserve.__version__}"


def test_unknown_command_is_a_usage_error(cli: Callable[..., Result]) -> None:
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "frobnicate" in result.stderr
