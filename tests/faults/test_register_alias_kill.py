"""`mlserve register --alias` SIGKILLed at every write it makes to the registry (issue 18,
item 5): afterwards the registry holds either no new version, or the new version WITH every
alias it asked for (for every reader at once, and in aliases.json once the next writer has run);
and a version number, once handed out, is never given to another artifact, even after that
version is deleted.

The writer is a child process (tests/faults/pausing_writer.py) that counts the registry's
writes (mkdir, fsync, rename, replace, unlink) and stops before the one numbered
MLSERVE_TEST_PAUSE_AT until it is killed; a first run without a pause lists them all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.data import IRIS_FEATURES, iris_estimator
from support.servers import process_env
from support.wait import wait_for

from mlserve.registry import Registry

pytestmark = pytest.mark.slow

WRITER = Path(__file__).with_name("pausing_writer.py")
ALIASES = ["production", "canary"]
WAIT_S = 60.0


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A registry holding iris:1 @production, and another iris model file to register."""
    import joblib

    folder = tmp_path_factory.mktemp("base")
    registry = Registry(folder / "registry")
    registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    model = folder / "iris.joblib"
    joblib.dump(iris_estimator(), model)
    return registry.root, model


def start_writer(root: Path, model: Path, home: Path, report: Path, pause_at: int | None
                 ) -> subprocess.Popen[bytes]:  # fmt: skip
    extra = {"MLSERVE_TEST_REGISTRY": str(root), "MLSERVE_TEST_PAUSE_FILE": str(report)}
    if pause_at is not None:
        extra["MLSERVE_TEST_PAUSE_AT"] = str(pause_at)
    alias_args = [arg for alias in ALIASES for arg in ("--alias", alias)]
    return subprocess.Popen(
        [sys.executable, str(WRITER), "register", str(model), "--name", "iris",
         "--registry", str(root), *alias_args],
        env=process_env(home, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def write_steps(base: tuple[Path, Path], tmp_path: Path) -> list[str]:
    """Every registry write of one uninterrupted `register --alias`."""
    root = tmp_path / "counted"
    shutil.copytree(base[0], root)
    report = tmp_path / "steps.txt"
    proc = start_writer(root, base[1], tmp_path / "home", report, None)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err.decode()
    registry = Registry(root)
    assert registry.versions("iris") == [1, 2]
    assert registry.aliases("iris") == dict.fromkeys(ALIASES, 2)
    return report.read_text().splitlines()


def kill_at(base: tuple[Path, Path], root: Path, step: int, tmp_path: Path) -> str:
    """Register into a copy of the base registry at `root`, SIGKILLed before write `step`."""
    shutil.copytree(base[0], root)
    report = tmp_path / f"paused-{step}.txt"
    proc = start_writer(root, base[1], tmp_path / "home", report, step)
    try:
        wait_for(
            lambda: report.exists() or proc.poll() is not None,
            f"the writer to reach write {step}",
            WAIT_S,
        )
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return report.read_text()


def test_register_with_aliases_killed_at_every_write_is_all_or_nothing_and_never_reuses_a_number(
    base: tuple[Path, Path], tmp_path: Path
) -> None:
    steps = write_steps(base, tmp_path)
    assert len(steps) >= 8, steps  # staging, artifact, metadata, publish, aliases, ...
    outcomes: dict[str, str] = {}
    for step in range(len(steps)):
        root = tmp_path / f"registry-{step}"
        where = kill_at(base, root, step, tmp_path)
        registry = Registry(root)
        versions = registry.versions("iris")
        aliases = registry.aliases("iris")
        if versions == [1]:
            outcomes[where] = "no new version"
            assert aliases == {"production": 1}, (where, aliases)
        else:
            outcomes[where] = "version 2 with its aliases"
            assert versions == [1, 2], (where, versions)
            assert aliases == dict.fromkeys(ALIASES, 2), (where, aliases)
            assert registry.resolve_version("iris@canary") == 2
            assert registry.load("iris@production").metadata.version == 2  # intact artifact

        # The next writer completes what the dead one left: aliases.json says it all, and no
        # intent or temp file is left beside the versions.
        registry.set_alias("iris", "staging", 1)
        stored = json.loads((root / "iris" / "aliases.json").read_text())
        assert stored == {**aliases, "staging": 1}, (where, stored)
        assert registry.aliases("iris") == stored
        leftovers = [p.name for p in (root / "iris").rglob("*") if "intent" in p.name]
        leftovers += [p.name for p in (root / "iris").rglob("*.tmp")]
        assert not leftovers, (where, leftovers)

        # Delete the newest version: its number is never handed out again.
        seen = max(versions)
        registry.delete(f"iris:{seen}", force=True)
        again = registry.register(base[1], name="iris", aliases=["production"])
        assert again.version > seen, (where, again.version, seen)
        assert registry.aliases("iris")["production"] == again.version
    # Both outcomes happened: the kill points span the publishing rename.
    assert set(outcomes.values()) == {"no new version", "version 2 with its aliases"}, outcomes
