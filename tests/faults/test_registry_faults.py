"""Registering on a full disk or a read-only registry: the write fails with a clear error and
leaves nothing half-written (no new version, no staging folder or temp file, aliases as they
were), and a running server keeps serving.

A real small tmpfs (full, then remounted read-only) where the machine lets the tests mount
one (root with CAP_SYS_ADMIN: CI); a fault-injecting file layer at every write of a
registration everywhere (chmod cannot make a directory read-only for root)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.data import IRIS_FEATURES, iris_estimator, populate
from support.servers import running

import mlserve.fsutil
import mlserve.registry.store
from mlserve.errors import RegistryError
from mlserve.registry import Registry

FLOWER = [5.1, 3.5, 1.4, 0.2]
FAULTS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}
STEPS = ["staging", "artifact", "metadata", "publish", "highest", "aliases"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the registry (but the lock) with its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    """Nothing half-written. `.highest` alone may move on (a skipped version number is
    harmless; a reused one is not), never a version, an alias or a leftover."""
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.endswith(".highest")} == {
        k: v for k, v in before.items() if not k.endswith(".highest")
    }
    staging = root / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------- fault injection
class FaultyFiles:
    """Makes one step of a registration fail with an OSError, as a full disk or a read-only
    file system would, at the same call the real file system would fail at."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.monkeypatch = monkeypatch
        self.root = root

    def fail(self, step: str, code: int) -> None:
        error = OSError(code, os.strerror(code))
        real_mkdir, real_rename, real_replace = os.mkdir, os.rename, os.replace
        real_write = mlserve.registry.store.write_synced

        def in_staging(path: Any) -> bool:
            return Path(path).parent.name == ".staging"

        def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if step == "staging" and in_staging(path):
                raise error
            real_mkdir(path, *args, **kwargs)

        def write(path: Path, data: bytes) -> None:
            if (step, path.name) in (("artifact", "model.joblib"), ("metadata", "metadata.json")):
                path.write_bytes(data[: len(data) // 2])  # a partial write, then the disk is full
                raise error
            real_write(path, data)

        def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if step == "publish" and in_staging(src):
                raise error
            real_rename(src, dst, *args, **kwargs)

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            target = Path(dst).name
            if (step, target) in (("highest", ".highest"), ("aliases", "aliases.json")):
                raise error
            real_replace(src, dst, *args, **kwargs)

        self.monkeypatch.setattr(mlserve.registry.store.os, "mkdir", mkdir)
        self.monkeypatch.setattr(mlserve.registry.store, "write_synced", write)
        self.monkeypatch.setattr(mlserve.registry.store.os, "rename", rename)
        self.monkeypatch.setattr(mlserve.fsutil.os, "replace", replace)

    def heal(self) -> None:
        self.monkeypatch.undo()


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    populate(root)
    return root


@pytest.mark.parametrize("code", sorted(FAULTS), ids=["ENOSPC", "EROFS"])
@pytest.mark.parametrize("step", STEPS)
def test_a_registration_that_cannot_write_fails_cleanly(
    populated: Path, monkeypatch: pytest.MonkeyPatch, step: str, code: int
) -> None:
    registry = Registry(populated)
    before = snapshot(populated)
    faults = FaultyFiles(monkeypatch, populated)
    faults.fail(step, code)
    with pytest.raises(RegistryError) as refused:
        registry.register_estimator(
            iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
        )
    faults.heal()

    message = refused.value.message
    assert "cannot write to registry" in message and FAULTS[code] in message, message
    assert_unchanged(populated, before)
    assert registry.versions("iris") == [1] and registry.aliases("iris") == {"production": 1}
    # Once the disk has room again, registering works and numbers stay unique.
    meta = registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    assert registry.versions("iris") == [1, meta.version] and meta.version >= 2
    assert registry.aliases("iris") == {"production": meta.version}
    assert registry.load("iris").metadata.version == meta.version


@pytest.mark.parametrize("code", sorted(FAULTS), ids=["ENOSPC", "EROFS"])
def test_an_alias_change_that_cannot_write_fails_cleanly(
    populated: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    registry = Registry(populated)
    registry.register_estimator(iris_estimator(), name="iris", feature_names=IRIS_FEATURES)
    before = snapshot(populated)
    faults = FaultyFiles(monkeypatch, populated)
    faults.fail("aliases", code)
    with pytest.raises(RegistryError, match=FAULTS[code]):
        registry.set_alias("iris", "production", 2)
    with pytest.raises(RegistryError, match=FAULTS[code]):
        registry.remove_alias("iris", "production")
    faults.heal()
    assert_unchanged(populated, before)
    assert registry.aliases("iris") == {"production": 1}


# ---------------------------------------------------------------------------- a real small disk
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path`, or a skip where this machine allows no mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (the fault-injecting tests cover this case)")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "mlserve-test", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Fill the file system holding `directory` up to `leave_bytes` free."""
    filler = directory / "filler.bin"
    free = shutil.disk_usage(directory).free
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave_bytes))
    return filler


def register_big_text_model(registry: Registry) -> Any:
    """A text model whose artifact is larger than what is left on the small disk."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    words = [f"w{i:05d}" for i in range(6000)]
    texts = [" ".join(words[i : i + 30]) for i in range(0, len(words), 30)]
    labels = ["a" if i % 2 else "b" for i in range(len(texts))]
    model = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
    return registry.register_estimator(
        model.fit(texts, labels), name="sentiment", aliases=["production"]
    )


def serving_checks(url: str) -> Callable[[], None]:
    def check() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            iris = http.post("/api/predict", json={"features": FLOWER, "model": "iris"})
            text = http.post("/api/predict", json={"text": "lovely", "model": "sentiment"})
            assert iris.status_code == 200 and text.status_code == 200, (iris.text, text.text)
            assert text.json()["version"] == 1
            assert http.post("/api/models/sentiment/reload").json()["status"] == "unchanged"
            assert http.get("/api/health").json()["status"] == "healthy"

    return check


@pytest.mark.slow
def test_a_full_then_read_only_disk_refuses_registration_and_the_server_serves(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        root = disk / "registry"
        populate(root)
        registry = Registry(root)
        with running(root, tmp_path / "home") as server:
            still_serving = serving_checks(server.url)
            still_serving()

            filler = fill(disk, leave_bytes=16 * 1024)
            before = snapshot(root)
            with pytest.raises(RegistryError, match="No space left on device"):
                register_big_text_model(registry)
            assert_unchanged(root, before)
            assert registry.versions("sentiment") == [1]
            still_serving()

            filler.unlink()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            try:
                before = snapshot(root)
                with pytest.raises(RegistryError, match="Read-only file system"):
                    register_big_text_model(registry)
                with pytest.raises(RegistryError, match="Read-only file system"):
                    registry.set_alias("iris", "staging", 1)
                assert_unchanged(root, before)
                still_serving()
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)

            meta = register_big_text_model(registry)  # room and write access again
            assert registry.versions("sentiment") == [1, meta.version]
