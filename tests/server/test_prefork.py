"""A real `mlserve serve --workers 2` on Linux: the supervisor forks its workers after importing
the app and reading the models (each model unpickled once, in the supervisor), replaces a
worker that dies, rolls them on SIGHUP, stops them all on SIGTERM (exit 0, nothing left
behind), and stops with a one-line error, rather than restarting forever, when workers keep
dying before they serve."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import psutil
import pytest
from support.data import IRIS_FEATURES, iris_estimator
from support.metrics import value
from support.net import free_port
from support.servers import MlserveProcess, process_env, serve
from support.wait import wait_for

from mlserve.registry import Registry
from mlserve.server.prefork import MAX_START_FAILURES

from .prefork_models import CountsLoads, DiesInTheLoader

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux"),
]

WAIT_S = 60.0  # generous: the machine running the suite may be busy
FLOWER = [6.7, 3.0, 5.2, 2.3]
X2 = np.array([[0.0, 1.0], [1.0, 0.0]])


def iris_registry(root: Path) -> Registry:
    registry = Registry(root / "registry")
    registry.register_estimator(
        iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    return registry


def serve_workers(registry: Registry, root: Path) -> MlserveProcess:
    """`mlserve serve --workers 2` over `registry`, logging at info (the supervisor's lines)."""
    return serve(registry.root, root / "home", args=["--workers", "2"], log_level="info")


def worker_pids(server: MlserveProcess) -> list[int]:
    """The server's child processes that are running (a killed one not reaped yet is not)."""
    return sorted(
        p.pid for p in psutil.Process(server.pid).children() if p.status() != psutil.STATUS_ZOMBIE
    )


def serving_workers(server: MlserveProcess) -> list[int]:
    """Wait until the server has two workers, each serving; their pids."""

    def check() -> list[int] | None:
        pids = worker_pids(server)
        log = server.output()
        if len(pids) == 2 and all(f"worker {pid} serving" in log for pid in pids):
            return pids
        return None

    return wait_for(check, "two serving workers", WAIT_S, details=server.output)


def predict(server: MlserveProcess) -> int | str:
    """A prediction on a new connection: its status, or the transport error's name."""
    try:
        body = {"features": FLOWER, "model": "iris"}
        return httpx.post(f"{server.url}/api/predict", json=body, timeout=10).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@dataclass
class Forked:
    server: MlserveProcess
    loads: Path  # a line per process that unpickled the model `counts`


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forked]:
    """`mlserve serve --workers 2` over iris and counts (CountsLoads), without a
    PROMETHEUS_MULTIPROC_DIR of its own (the server makes one); SIGTERM at the end: exit 0."""
    root = tmp_path_factory.mktemp("forked")
    registry = iris_registry(root)
    loads = root / "loads.log"
    registry.register_estimator(CountsLoads(str(loads)).fit(X2, ["a", "b"]), name="counts")
    loads.unlink(missing_ok=True)  # registering may have unpickled it here
    server = serve_workers(registry, root)
    try:
        server.wait_ready()
        yield Forked(server, loads)
    finally:
        code = server.terminate()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()


def test_workers_are_forked_children_of_the_server_process(forked: Forked) -> None:
    server = forked.server
    pids = serving_workers(server)
    supervisor = psutil.Process(server.pid)

    for pid in pids:
        worker = psutil.Process(pid)
        assert worker.ppid() == server.pid
        # Forked, not spawned: a spawned worker runs `python -c "from multiprocessing..."`.
        assert worker.cmdline() == supervisor.cmdline()
    assert "imported the server and read 2 models" in server.output()


def test_a_model_is_unpickled_once_in_the_supervisor_for_every_worker(forked: Forked) -> None:
    serving_workers(forked.server)

    answer = forked.server.post("/api/predict", {"features": [0.0, 1.0], "model": "counts"})

    assert answer.status_code == 200, answer.text
    assert forked.loads.read_text().split() == [str(forked.server.pid)]


def test_metrics_of_both_workers_are_summed(forked: Forked) -> None:
    server = forked.server
    serving_workers(server)
    before = value(server.metrics(), "mlserve_predictions_total", model="iris")

    statuses = [predict(server) for _ in range(10)]

    assert statuses == [200] * 10
    assert value(server.metrics(), "mlserve_predictions_total", model="iris") - before == 10
    assert value(server.metrics(), "mlserve_models_loaded") == 2 * 2  # two in each worker


def test_a_killed_worker_is_replaced_while_requests_are_answered(forked: Forked) -> None:
    server = forked.server
    old = serving_workers(server)
    victim = old[0]
    statuses: list[int | str] = []

    os.kill(victim, signal.SIGKILL)

    def replaced() -> list[int] | None:
        statuses.append(predict(server))
        pids = worker_pids(server)
        new = [pid for pid in pids if pid not in old]
        log = server.output()
        if victim not in pids and len(pids) == 2 and all(f"worker {p} serving" in log for p in new):
            return new
        return None

    new = wait_for(replaced, "a new worker in place of the killed one", WAIT_S)
    assert len(new) == 1 and psutil.Process(new[0]).ppid() == server.pid
    assert set(statuses) == {200}
    assert f"worker {victim} was killed by SIGKILL" in server.output()
    # The dead worker's live gauges left the sums (mark_process_dead): two models per worker.
    assert value(server.metrics(), "mlserve_models_loaded") == 2 * 2
    # The new worker took the supervisor's copy of each model, as its first workers did.
    assert forked.loads.read_text().split() == [str(server.pid)]


def test_sighup_replaces_every_worker_while_requests_are_answered(forked: Forked) -> None:
    server = forked.server
    old = serving_workers(server)
    statuses: list[int | str] = []

    os.kill(server.pid, signal.SIGHUP)

    def rolled() -> list[int] | None:
        statuses.append(predict(server))
        pids = worker_pids(server)
        log = server.output()
        if len(pids) == 2 and not set(pids) & set(old):
            if all(f"worker {pid} serving" in log for pid in pids):
                return pids
        return None

    wait_for(rolled, "two new workers after SIGHUP", WAIT_S, details=server.output)
    assert set(statuses) == {200}
    assert "received SIGHUP" in server.output()
    assert value(server.metrics(), "mlserve_models_loaded") == 2 * 2
    assert forked.loads.read_text().split() == [str(server.pid)]


def test_sigttin_adds_a_worker_and_sigttou_removes_one(forked: Forked) -> None:
    server = forked.server
    old = serving_workers(server)

    os.kill(server.pid, signal.SIGTTIN)
    three = wait_for(
        lambda: len(pids := worker_pids(server)) == 3 and set(old) < set(pids) and pids,
        "a third worker",
        WAIT_S,
        details=server.output,
    )
    added = (set(three) - set(old)).pop()
    server.wait_log(f"worker {added} serving", WAIT_S)
    os.kill(server.pid, signal.SIGTTOU)

    assert serving_workers(server) == old  # the newest one stopped
    # The supervisor logs the exit once it has reaped the worker, which can come a moment
    # after the worker's pid has left the list.
    server.wait_log(f"worker {added} exited with code 0", WAIT_S)


def test_model_files_are_read_in_the_supervisor_only(tmp_path: Path) -> None:
    loads, path = tmp_path / "loads.log", tmp_path / "counts.joblib"
    joblib.dump(CountsLoads(str(loads)).fit(X2, ["a", "b"]), path)
    home, port = tmp_path / "home", free_port()
    args = ["serve", "--port", port, "--model-path", path, "--workers", "2", "--log-level", "info"]
    server = MlserveProcess.start(
        args, cwd=home, env=process_env(home), name="files", url=f"http://127.0.0.1:{port}"
    )
    try:
        server.wait_ready()
        serving_workers(server)
        answer = server.post("/api/predict", {"features": [0.0, 1.0]})
    finally:
        code = server.terminate()

    assert answer.status_code == 200, answer.text
    assert code == 0, server.output()
    # Read (and smoke-checked) by serve before it listens, then once more to keep; never
    # in a worker.
    assert set(loads.read_text().split()) == {str(server.pid)}


def test_sigterm_stops_every_worker_and_exits_0(tmp_path: Path) -> None:
    server = serve_workers(iris_registry(tmp_path), tmp_path)
    try:
        server.wait_ready()
        pids = serving_workers(server)
    finally:
        code = server.terminate()

    assert code == 0, server.output()
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), "no worker left", WAIT_S)
    assert "Traceback" not in server.output()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = serve_workers(iris_registry(tmp_path), tmp_path)
    try:
        server.wait_ready()
        pids = serving_workers(server)

        server.kill()  # SIGKILL: the supervisor cannot stop them itself

        wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), "no orphan", WAIT_S)
    finally:
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
    assert "the supervisor is gone" in server.output()


def test_workers_dying_before_they_serve_stop_the_server(tmp_path: Path) -> None:
    registry = iris_registry(tmp_path)
    registry.register_estimator(DiesInTheLoader().fit(X2, ["a", "b"]), name="dies")
    server = serve_workers(registry, tmp_path)
    try:
        code = server.process.wait(WAIT_S)
    finally:
        server.stop()

    output = server.output()
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1, output
    assert lines[-1].startswith("error: workers cannot start: "), output
    assert "was killed by SIGKILL" in lines[-1]
    # Bounded: the failures counted, and the other worker starting when the last one died.
    assert MAX_START_FAILURES <= output.count("started worker") <= MAX_START_FAILURES + 1
