"""The image's hashed locks (deploy/requirements.lock, deploy/build-requirements.lock) cover
pyproject.toml, so a dependency change cannot leave the image installing something else, and the
Dockerfile installs from them alone."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "build-requirements.lock"
IMAGE_EXTRAS = ("redis", "jwt")
# The image: CPython 3.11 on Linux (deploy/Dockerfile's PYTHON_IMAGE, deploy/lock's target).
IMAGE_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
REGENERATE = "regenerate the locks with deploy/lock (see docs/deployment.md)"


def pyproject() -> dict[str, Any]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def read_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its sha256 hashes), from a `uv pip compile --generate-hashes`
    file (one `name==version \\` line, then `--hash=sha256:...` lines)."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            current = None
            continue
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match["name"])
            assert current not in entries, f"{path.name}: {current} pinned twice"
            entries[current] = (Version(match["version"]), [])
        elif line.startswith("--hash=") and current is not None:
            entries[current][1].append(line.removeprefix("--hash=").rstrip(" \\"))
        else:
            raise AssertionError(f"{path.name}: unexpected line {raw!r}")
    return entries


def image_requirements() -> list[Requirement]:
    """The base dependencies plus the redis and jwt extras, as they apply in the image."""
    project = pyproject()["project"]
    texts = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        texts += project["optional-dependencies"][extra]
    requirements = [Requirement(text) for text in texts]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(IMAGE_ENV)]


def assert_covered(requirements: list[Requirement], lock: dict[str, tuple[Version, list[str]]]):
    missing, outside = [], []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in lock:
            missing.append(str(requirement))
        elif not requirement.specifier.contains(lock[name][0], prereleases=True):
            outside.append(f"{requirement} (locked {lock[name][0]})")
    assert not missing, f"not in the lock: {missing}; {REGENERATE}"
    assert not outside, f"locked outside pyproject's range: {outside}; {REGENERATE}"


def test_the_lock_covers_every_base_redis_and_jwt_requirement() -> None:
    requirements = image_requirements()
    assert {"celery", "redis", "pyjwt", "scikit-learn"} <= {
        canonicalize_name(r.name) for r in requirements
    }
    assert_covered(requirements, read_lock(LOCK))


def lock_parents(path: Path) -> dict[str, set[str]]:
    """name -> what uv says it is locked for (its `# via` lines): other locked names, or the
    project itself as `DIST (pyproject.toml)`."""
    parents: dict[str, set[str]] = {}
    current: str | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(raw)
        if match:
            current = canonicalize_name(match["name"])
            parents[current] = set()
            continue
        text = raw.strip().removeprefix("#").strip()
        if current is None or not raw.startswith("    #") or text == "via":
            continue
        parents[current].add(text.removeprefix("via ").strip())
    return parents


def test_the_lock_holds_nothing_pyproject_no_longer_asks_for() -> None:
    """A dependency dropped from pyproject stays in a stale lock, locked 'via' the project:
    every entry is either a requirement of the project or needed by another locked entry."""
    direct = {canonicalize_name(r.name) for r in image_requirements()}
    parents = lock_parents(LOCK)
    assert parents and all(parents.values()), "every entry names what it is locked for"
    stale = []
    for name, via in sorted(parents.items()):
        for parent in via:
            if parent.endswith("(pyproject.toml)"):
                if name not in direct:
                    stale.append(name)
            elif canonicalize_name(parent) not in parents:
                stale.append(f"{name} (via {parent}, not locked)")
    assert not stale, f"locked but not asked for: {stale}; {REGENERATE}"


def test_the_lock_covers_the_extras_those_requirements_ask_for() -> None:
    """uvicorn[...], celery[redis], pyjwt[crypto]: what each extra adds must be locked too
    (read from the installed distribution's metadata, which names the same dependencies)."""
    lock = read_lock(LOCK)
    checked = 0
    for requirement in image_requirements():
        for extra in sorted(requirement.extras):
            try:
                requires = metadata.requires(requirement.name) or []
            except metadata.PackageNotFoundError:
                pytest.fail(f"{requirement.name} is not installed: cannot read its extra {extra}")
            env = {**IMAGE_ENV, "extra": extra}
            wanted = [Requirement(text) for text in requires]
            added = [r for r in wanted if r.marker is not None and r.marker.evaluate(env)]
            added = [r for r in added if not r.marker or not r.marker.evaluate(IMAGE_ENV)]
            names = sorted({canonicalize_name(r.name) for r in added} - set(lock))
            assert not names, f"{requirement.name}[{extra}] needs {names}; {REGENERATE}"
            checked += 1
    assert checked >= 2  # celery[redis], pyjwt[crypto]


def test_the_build_lock_covers_the_build_backend() -> None:
    requires = [Requirement(text) for text in pyproject()["build-system"]["requires"]]
    assert_covered(requires, read_lock(BUILD_LOCK))


@pytest.mark.parametrize("path", [LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_locked_file_is_pinned_by_hash(path: Path) -> None:
    lock = read_lock(path)
    assert lock
    unhashed = sorted(name for name, (_, hashes) in lock.items() if not hashes)
    assert not unhashed, f"{path.name}: no --hash for {unhashed}"
    for name, (_, hashes) in lock.items():
        for value in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), f"{name}: {value}"
    # Written by deploy/lock (its header names the command), never edited by hand.
    assert "#    deploy/lock\n" in path.read_text(encoding="utf-8")


def test_the_lock_does_not_pin_mlserve_itself() -> None:
    name = canonicalize_name(pyproject()["project"]["name"])
    assert name not in read_lock(LOCK)
    assert "mlserve" not in read_lock(LOCK)


def test_the_dockerfile_installs_from_the_locks_alone() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    body = re.sub(r"\\\n\s*", " ", text)
    assert "pip install --require-hashes --no-deps -r deploy/requirements.lock" in body
    assert "pip install --require-hashes --no-deps -r deploy/build-requirements.lock" in body
    # mlserve's own wheel: built without isolation (the locked setuptools, nothing fetched)
    # and installed without resolving anything.
    assert "pip wheel --no-deps --no-build-isolation" in body
    assert "pip install --no-deps /tmp/wheel/*.whl" in body
    installs = re.findall(r"pip install [^&\n]*", body)
    assert all("--no-deps" in command for command in installs), installs
