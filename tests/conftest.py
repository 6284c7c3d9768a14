"""Shared fixtures: an isolated MLSERVE_HOME per test, tiny fitted models, a CLI runner."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.servers import MlserveProcess, serve
from typer.testing import CliRunner, Result

from mlserve.registry import Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
# Read at import: isolated_env removes every MLSERVE_* variable while a test runs, and a skip is
# reported while it is removed (so reading it in the report hook never saw it).
NO_SKIPS = os.environ.get("MLSERVE_TEST_NO_SKIPS") == "1"

with warnings.catch_warnings():
    # Starlette warns (a UserWarning) that driving its TestClient with httpx is deprecated; it
    # works as documented, and httpx stays our client library. Imported once here, before any
    # test module, so that no module needs this guard of its own (pyproject's filter for the
    # same warning applies to the tests, not to conftest imports).
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    import fastapi.testclient  # noqa: F401


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MLSERVE_* variable from the outside leaks in; the home and the cwd are per-test."""
    for key in list(os.environ):
        if key.upper().startswith("MLSERVE_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("MLSERVE_HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # so a stray ./mlserve.toml is never discovered
    return home


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points its loggers at the captured stderr of one invocation; undo that."""
    loggers = [logging.getLogger(name) for name in ("mlserve", "uvicorn", "uvicorn.error")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


_WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _signal_state() -> tuple[frozenset[int], tuple[Any, ...]]:
    mask = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    return mask, tuple(signal.getsignal(s) for s in _WATCHED_SIGNALS)


@pytest.fixture(autouse=True)
def _signals_left_as_found() -> Iterator[None]:
    """A test that leaves a signal blocked or a handler replaced in the worker's main thread
    fails (and the state is put back): every later test in that worker, and every process it
    starts, would inherit it (a blocked SIGINT once made a Ctrl-C test time out in CI)."""
    before = _signal_state()
    yield
    after = _signal_state()
    if after == before:
        return
    signal.pthread_sigmask(signal.SIG_SETMASK, before[0])
    for signum, handler in zip(_WATCHED_SIGNALS, before[1], strict=True):
        signal.signal(signum, handler)
    blocked = sorted(signal.Signals(s).name for s in after[0] - before[0])
    replaced = [
        signal.Signals(s).name
        for s, old, new in zip(_WATCHED_SIGNALS, before[1], after[1], strict=True)
        if old != new
    ]
    pytest.fail(f"the test left signals changed: blocked {blocked}, handlers replaced {replaced}")


@pytest.fixture(autouse=True)
def _log_record_factory_restored() -> Iterator[None]:
    """Tracing installs a log record factory once per process (as a server would); in the test
    worker it is put back after each test, so the tests that follow see the default logging
    setup (the access log's direct path needs the default factory)."""
    before = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(before)


@pytest.fixture
def home(isolated_env: Path) -> Path:
    return isolated_env


@pytest.fixture
def registry_path(home: Path) -> Path:
    return home / "registry"


@pytest.fixture
def registry(registry_path: Path) -> Registry:
    return Registry(registry_path)


def _xy() -> tuple[Any, list[int]]:
    import numpy as np

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 1.0], [0.0, 2.0]])
    return x, [0, 1, 1, 0, 1, 0]


@pytest.fixture
def classifier() -> Any:
    """A tiny fitted tabular classifier (two features, classes 0 and 1)."""
    from sklearn.linear_model import LogisticRegression

    x, y = _xy()
    return LogisticRegression().fit(x, y)


@pytest.fixture
def regressor() -> Any:
    from sklearn.linear_model import LinearRegression

    x, _ = _xy()
    return LinearRegression().fit(x, [0.5, 1.5, 2.0, 0.1, 3.2, 0.7])


@pytest.fixture
def text_classifier() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = ["good great fine", "awful bad", "lovely good", "terrible awful", "great", "bad"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(
        texts, labels
    )


def _dump(obj: Any, path: Path) -> Path:
    import joblib

    joblib.dump(obj, path)
    return path


@pytest.fixture
def save_joblib() -> Callable[[Any, Path], Path]:
    """Write any object to a joblib file (how a user would save a model)."""
    return _dump


@pytest.fixture
def model_file(tmp_path: Path, classifier: Any) -> Path:
    """The tiny classifier saved with joblib (made per test, never committed)."""
    return _dump(classifier, tmp_path / "model.joblib")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner) -> Callable[..., Result]:
    """Invoke `mlserve ARGS...` in-process; stdout and stderr are captured separately."""
    from mlserve.cli import app

    def invoke(*args: str | os.PathLike[str]) -> Result:
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _assert_user_error(result: Result, *fragments: str, code: int = 2) -> None:
    """A user error: the exit code, one line on stderr naming the fragments, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error: "), message
    assert "\n" not in message, message
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.fixture
def assert_user_error() -> Callable[..., None]:
    return _assert_user_error


@pytest.fixture
def run_mlserve() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m mlserve ARGS...` as a real process with the test's environment."""

    def run(*args: str | os.PathLike[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlserve", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ),
            check=False,
        )

    return run


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., MlserveProcess]]:
    """start_server(registry, home=None, **kwargs): a real `python -m mlserve serve` over
    `registry` on a free port (support.servers.serve; home: the test's tmp_path/home), not
    waited for; stopped at the end of the test if it still runs (SIGTERM, so that the workers
    of a --workers N server go with it; SIGKILL if it hangs)."""
    started: list[MlserveProcess] = []

    def start(registry: Path, home: Path | None = None, **kwargs: Any) -> MlserveProcess:
        server = serve(registry, home or tmp_path / "home", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# ---------------------------------------------------------------------------- parallel workers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (--dist loadscope hands out whole modules, in collection order) the
    modules that start real processes (marked slow) come first, so that none of them is the
    last one running while the other workers idle. A module's own order is kept; a run in one
    process keeps the collection order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


# ---------------------------------------------------------------------------- CI: no silent skips
FORBIDDEN = "skipped, and MLSERVE_TEST_NO_SKIPS=1 forbids skips"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With MLSERVE_TEST_NO_SKIPS=1 (set by .ci/run), a skipped test fails: a missing Redis,
    tritonclient or PyJWT must not let CI pass with part of the suite unrun."""
    outcome = yield
    if not NO_SKIPS:
        return
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{FORBIDDEN}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a module skipped whole while collected (pytest.importorskip at its top)."""
    outcome = yield
    if not NO_SKIPS:
        return
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{FORBIDDEN}: {reason}"
