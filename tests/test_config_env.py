"""Environment edge cases of the settings that users hit in shells and compose files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlserve.config import load_settings


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_mlserve_home_means_the_default_home(
    blank: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("MLSERVE_HOME", blank)
    settings = load_settings(None)
    assert settings.home == tmp_path / "user" / ".mlserve"
    assert settings.keys_file == tmp_path / "user" / ".mlserve" / "state" / "keys.json"


def test_keys_create_with_a_blank_home_writes_nothing_into_the_current_directory(
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env.update(HOME=str(tmp_path / "user"), MLSERVE_HOME="")
    done = subprocess.run(
        [sys.executable, "-m", "mlserve", "keys", "create", "--role", "predict", "--name", "ci"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "user" / ".mlserve" / "state" / "keys.json").is_file()
