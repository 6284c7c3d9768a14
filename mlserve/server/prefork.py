"""--workers N on Linux: the supervisor imports (and loads) once, then forks and keeps N workers.

Spawned workers (uvicorn's supervisor) each import FastAPI, scikit-learn and scipy and load the
models themselves: ~130 MB of private memory per worker. Here the supervisor does that work once,
freezes its heap (gc.freeze(), so no collection in a worker writes to the inherited objects) and
forks: the workers share those pages copy-on-write. The supervisor itself never serves, and at
fork time it has no event loop, no thread and no connection a worker could inherit half-used.

Supervision: SIGTERM/SIGINT stop every worker gracefully (each finishes its requests) and exit 0;
a worker that dies is replaced, with a backoff when deaths repeat; workers that keep dying before
they serve stop the server (PreforkError, exit 1) rather than being restarted forever; a worker
whose heartbeat stops (a deadlock in native code) is killed and replaced. SIGHUP replaces the
workers one at a time (each new one serving before an old one stops), re-reading the registry;
SIGTTIN/SIGTTOU add/remove a worker.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from mlserve.errors import MlserveError

if TYPE_CHECKING:
    from mlserve.config import Settings

__all__ = ["PreforkError", "Supervisor", "can_fork", "exit_cleanly", "preload", "serve_forked"]

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit code for a server that failed before serving
HEARTBEAT_S = 1.0  # a worker writes to its pipe this often
HEALTHCHECK_S = 5.0  # no heartbeat for this long: the worker is hung, killed (uvicorn's default)
MAX_START_FAILURES = 5  # workers dying before they serve, in a row: the server stops
BACKOFF_S = 0.5  # first delay before replacing a worker that died; doubles, up to BACKOFF_MAX_S
BACKOFF_MAX_S = 10.0
DEATH_WINDOW_S = 60.0  # deaths of serving workers in this window make the backoff grow
STOP_MARGIN_S = 10.0  # past twice server.graceful_timeout plus this, workers left are killed
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


class PreforkError(MlserveError):
    """The workers cannot serve: they keep dying before they start."""

    exit_code = 1


def can_fork() -> bool:
    """Forking a process that has imported numpy and scikit-learn is sound on Linux; macOS's
    system libraries (Accelerate, Objective-C) are not fork-safe, and Windows has no fork."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def describe_status(status: int) -> str:
    """A waitpid status in words: 'exited with code 1', 'was killed by SIGKILL'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


# ---------------------------------------------------------------------- the supervisor's imports


def preload(settings: Settings) -> int:
    """Import what a worker imports (the app: FastAPI, pydantic, the routes; the model formats)
    and read the models a worker loads at startup, keeping their estimators for the workers
    (Registry.preload): their classes' modules (scikit-learn, scipy, ...) and their arrays are
    then in memory once, shared by every worker. Returns how many models were read. A model
    that cannot be read here is left to the workers, which report it as they would without
    --workers."""
    import mlserve.server.app  # noqa: F401 - FastAPI, starlette, pydantic, the routes
    from mlserve.registry import ModelRef, open_models
    from mlserve.runtime import formats

    quiet = logging.getLogger("mlserve.registry")  # the workers log the same lines again
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    loaded = 0
    try:
        registry = open_models(settings)
        server = settings.server
        if server.models:
            refs = [ModelRef.parse(r) for r in server.models]
        else:
            refs = [ModelRef(name=n) for n in registry.names()]
        if server.max_loaded > 0 or server.memory_budget_mb > 0:
            # A budget: only the protected models load at startup; the others on demand.
            protected = {ModelRef.parse(r).name for r in server.models} | set(server.pinned_models)
            refs = [ref for ref in refs if ref.name in protected]
        for ref in refs:
            try:
                meta = registry.resolve(ref, default_alias=server.default_alias)
                if formats.get(meta.format).name == "onnx":  # imported, not loaded:
                    continue  # an ONNX Runtime session starts threads, built in each worker
                registry.preload(meta)
                loaded += 1
            except Exception as exc:  # noqa: BLE001 - a worker reports it, in its own words
                log.debug("not preloaded: %s: %s", ref, exc)
    except MlserveError as exc:
        log.debug("no models preloaded: %s", exc.message)
    finally:
        quiet.setLevel(level)
    return loaded


def _threads() -> list[str]:
    """The names of this process's threads other than the calling one (from /proc)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []
    names = []
    for tid in tids:
        if tid == threading.get_native_id():
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                names.append(fh.read().strip())
        except OSError:
            continue
    return names


# ---------------------------------------------------------------------- a worker


def exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """After uvicorn's graceful shutdown it re-raises the signal it caught; exit 0 then."""
    raise SystemExit(0)


class _Heartbeat:
    """A worker's daemon thread writing to its pipe every HEARTBEAT_S: "R" once its server
    serves, "." before. When the supervisor is gone (the pipe breaks, or the worker has a new
    parent) the worker stops itself gracefully: no worker outlives its supervisor."""

    def __init__(self, fd: int, parent: int) -> None:
        self.fd = fd
        self.parent = parent
        self.server: Any = None  # uvicorn.Server, once built

    def start(self) -> None:
        threading.Thread(target=self._run, name="prefork-heartbeat", daemon=True).start()

    def _run(self) -> None:
        while True:
            serving = self.server is not None and self.server.started
            try:
                if os.getppid() != self.parent:
                    raise BrokenPipeError
                os.write(self.fd, b"R" if serving else b".")
            except BlockingIOError:
                pass  # the supervisor is slow to read: it has our earlier beats
            except OSError:
                log.warning("the supervisor is gone: worker %d stops", os.getpid())
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(HEARTBEAT_S)


def worker_main(
    settings: Settings, options: dict[str, Any], sock: socket.socket, beat_fd: int, parent: int
) -> NoReturn:
    """A forked worker: its own logging, the app (create_app, models loaded in its lifespan)
    served on the inherited socket, then os._exit: never back into the supervisor's code."""
    code = STARTUP_FAILURE  # until its server serves
    server: Any = None
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, exit_cleanly)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # blocked over the fork
        beat = _Heartbeat(beat_fd, parent)
        beat.start()
        import uvicorn

        from mlserve.logs import setup_logging
        from mlserve.server.app import create_app
        from mlserve.server.protocol import ServerConfig

        setup_logging(level=settings.logging.level, fmt=settings.logging.format)
        # Loaded before serving (background_load=False): a worker accepts on the shared
        # socket only once its models are loaded, never answering 503 while its siblings serve.
        app = create_app(settings, background_load=False, freeze_heap=True)
        server = uvicorn.Server(ServerConfig(app, **options))
        beat.server = server
        server.run(sockets=[sock])
        code = 0 if server.started else STARTUP_FAILURE
    except SystemExit as exc:  # exit_cleanly: a signal before uvicorn took them over
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        if isinstance(exc, MlserveError):
            log.error("worker %d cannot serve: %s", os.getpid(), exc.message)
        else:
            log.exception("worker %d failed", os.getpid())
        code = 1 if server is not None and server.started else STARTUP_FAILURE
    finally:
        try:
            logging.shutdown()  # the access log's last block
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---------------------------------------------------------------------- the supervisor


@dataclass(slots=True)
class Worker:
    pid: int
    beat: int  # the read end of its heartbeat pipe
    last_beat: float
    started: bool = False  # its server has served (a death after that is not a start failure)
    retiring: bool = False  # told to stop: not replaced when it exits
    eof: bool = False  # its pipe closed (it is exiting)


class Supervisor:
    """Forks `workers` processes running `target(beat_fd)` and keeps that many alive until
    SIGTERM/SIGINT. `run` returns 0 once they all stopped, or raises PreforkError."""

    def __init__(
        self,
        target: Callable[[int], NoReturn],
        *,
        workers: int,
        stop_timeout_s: float,
        on_exit: Callable[[int], None] = lambda pid: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.wanted = workers
        self.stop_timeout_s = stop_timeout_s
        self.on_exit = on_exit  # called with the pid of each worker that exited
        self.clock = clock
        self.workers: dict[int, Worker] = {}
        self.received: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.failure: str | None = None  # why the server stops on its own
        self.start_failures = 0  # workers in a row that died before serving
        self.served = False  # a worker has served: a failing start may be passing, not fatal
        self.deaths: list[float] = []  # when serving workers died (DEATH_WINDOW_S)
        self.next_fork = 0.0  # no replacement before this
        self.rolling: list[int] = []  # SIGHUP: old workers still to replace, one at a time
        self.replacement: int | None = None  # the new worker an old one waits for
        self.wake: tuple[int, int] | None = None  # signal.set_wakeup_fd's pipe, while running

    # ------------------------------------------------------------------ forking
    def fork(self) -> Worker:
        read, write = os.pipe()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                try:
                    signal.set_wakeup_fd(-1)
                    for fd in [read, *(self.wake or ()), *(w.beat for w in self.workers.values())]:
                        os.close(fd)
                    os.set_blocking(write, False)
                finally:
                    self.target(write)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write)
        os.set_blocking(read, False)
        worker = self.workers[pid] = Worker(pid=pid, beat=read, last_beat=self.clock())
        log.info("started worker %d", pid)
        return worker

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        wake_read, wake_write = self.wake = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda s, f: None)
        old_wakeup = signal.set_wakeup_fd(wake_write)
        try:
            for _ in range(self.wanted):
                self.fork()
            while self.workers or not self.stopping:
                self._handle_signals()
                self._reap()
                if self.stopping and not self.workers:
                    break
                self._wait(wake_read)
                self._check()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)
            self.wake = None
            for worker in self.workers.values():
                os.close(worker.beat)
        if self.failure is not None:
            raise PreforkError(self.failure)
        log.info("all workers stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def _handle_signals(self) -> None:
        while self.received:
            sig = self.received.pop(0)
            name = signal.Signals(sig).name
            if sig in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    log.info("received %s: stopping %d workers", name, len(self.workers))
                self.stop()
            elif self.stopping:
                continue
            elif sig == signal.SIGHUP:
                self.rolling = [pid for pid, w in self.workers.items() if not w.retiring]
                log.info("received SIGHUP: replacing %d workers one by one", len(self.rolling))
            elif sig == signal.SIGTTIN:
                self.wanted += 1
                log.info("received SIGTTIN: %d workers", self.wanted)
            elif sig == signal.SIGTTOU and self.wanted > 1:
                self.wanted -= 1
                log.info("received SIGTTOU: %d workers", self.wanted)
                newest = [pid for pid, w in self.workers.items() if not w.retiring]
                if newest:
                    self._retire(newest[-1])

    def stop(self, failure: str | None = None) -> None:
        """Stop every worker gracefully (SIGTERM); they are killed past the stop timeout."""
        if failure is not None and self.failure is None:
            self.failure = failure
            log.error("%s", failure)
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = self.clock() + self.stop_timeout_s
        for pid in self.workers:
            # SIGTERM also after SIGINT: a second SIGINT would make uvicorn skip the drain,
            # and a terminal's Ctrl-C already reached every worker of the process group.
            self._signal(pid, signal.SIGTERM)

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # exited; reaped next

    def _retire(self, pid: int) -> None:
        self.workers[pid].retiring = True
        self._signal(pid, signal.SIGTERM)

    def _reap(self) -> None:
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            worker = self.workers.pop(pid)
            os.close(worker.beat)
            self.on_exit(pid)
            self._exited(worker, describe_status(status), status)

    def _exited(self, worker: Worker, how: str, status: int) -> None:
        now = self.clock()
        if self.stopping or worker.retiring:
            log.info("worker %d %s", worker.pid, how)
            return
        if worker.pid == self.replacement:
            self.replacement, self.rolling = None, []
            log.error("a new worker %s before serving: SIGHUP restart abandoned", how)
            return
        if not worker.started:
            self.start_failures += 1
            code = os.waitstatus_to_exitcode(status)
            # uvicorn's code for a failed startup (the app cannot be built, its lifespan
            # failed): before any worker served it would fail the same way every time.
            fatal = code == STARTUP_FAILURE and not self.served
            if fatal or self.start_failures >= MAX_START_FAILURES:
                self.stop(
                    f"workers cannot start: {self.start_failures} in a row exited before "
                    f"serving, the last one {how} (see the log above)"
                )
                return
            delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (self.start_failures - 1))
            log.warning("worker %d %s before serving; another in %.1f s", worker.pid, how, delay)
        else:
            self.deaths = [t for t in self.deaths if now - t < DEATH_WINDOW_S] + [now]
            recent = len(self.deaths)
            delay = 0.0 if recent <= 1 else min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (recent - 2))
            log.warning("worker %d %s; starting another", worker.pid, how)
        self.next_fork = max(self.next_fork, now + delay)

    def _wait(self, wake: int) -> None:
        """Wait for heartbeats, a signal or the next deadline (at most HEARTBEAT_S / 2)."""
        fds = [w.beat for w in self.workers.values() if not w.eof]
        timeout = HEARTBEAT_S / 2
        if self.next_fork > self.clock():
            timeout = min(timeout, self.next_fork - self.clock())
        try:
            ready, _, _ = select.select([wake, *fds], [], [], max(timeout, 0.0))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            return
        if wake in ready:
            try:
                while os.read(wake, 512):
                    pass
            except BlockingIOError:
                pass
        now = self.clock()
        for worker in list(self.workers.values()):
            if worker.beat not in ready:
                continue
            try:
                data = os.read(worker.beat, 4096)
            except BlockingIOError:
                continue
            if not data:
                worker.eof = True
                continue
            worker.last_beat = now
            if b"R" in data and not worker.started:
                worker.started = self.served = True
                self.start_failures = 0
                log.info("worker %d serving", worker.pid)

    def _check(self) -> None:
        now = self.clock()
        if self.stopping:
            if now >= self.stop_deadline and self.workers:
                log.warning(
                    "workers %s still running %.0f s after the stop: killed",
                    ", ".join(map(str, self.workers)),
                    self.stop_timeout_s,
                )
                for pid in self.workers:
                    self._signal(pid, signal.SIGKILL)
                self.stop_deadline = now + self.stop_timeout_s
            return
        for worker in self.workers.values():
            if not worker.eof and now - worker.last_beat > HEALTHCHECK_S:
                log.error(
                    "worker %d has not answered for %.0f s: killed", worker.pid, HEALTHCHECK_S
                )
                self._signal(worker.pid, signal.SIGKILL)
                worker.last_beat = now  # reaped next; not killed twice meanwhile
        self._roll()
        serving = sum(1 for w in self.workers.values() if not w.retiring)
        if serving < self.wanted and now >= self.next_fork:
            self.fork()

    def _roll(self) -> None:
        """SIGHUP: one new worker at a time; once it serves, one old worker stops."""
        if self.replacement is not None:
            new = self.workers.get(self.replacement)
            if new is None or not new.started:
                return
            self.replacement = None
            old = self.rolling.pop(0)
            if old in self.workers:
                self._retire(old)
        while self.rolling and self.rolling[0] not in self.workers:
            self.rolling.pop(0)  # died meanwhile (and replaced)
        if self.rolling:
            self.replacement = self.fork().pid


# ---------------------------------------------------------------------- the entry point


def serve_forked(settings: Settings, options: dict[str, Any], sock: socket.socket) -> None:
    """Serve with settings.server.workers forked workers, each running uvicorn with `options`
    on `sock`, until SIGTERM/SIGINT (or until the workers cannot start: PreforkError).
    PROMETHEUS_MULTIPROC_DIR must be set already."""
    from prometheus_client import values
    from prometheus_client.multiprocess import mark_process_dead

    # The value class is chosen when prometheus_client is imported, which may have been
    # before the metrics folder was set: choose again, so the workers' metrics go to files.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    loaded = preload(settings)
    gc.collect()
    gc.freeze()  # the inherited objects stay out of every worker's collections: not copied
    extra = _threads()
    if extra:
        log.warning(
            "%d threads (%s) are running in the supervisor as it forks its workers: a worker "
            "may hang in native code (OMP_NUM_THREADS=1 keeps OpenMP and BLAS single-threaded)",
            len(extra),
            ", ".join(extra),
        )
    log.info(
        "supervisor %d imported the server and read %d models in %.1f s; forking %d workers",
        os.getpid(),
        loaded,
        time.perf_counter() - started,
        settings.server.workers,
    )
    parent = os.getpid()

    def target(beat_fd: int) -> NoReturn:
        worker_main(settings, options, sock, beat_fd, parent)

    def dead(pid: int) -> None:
        # Its live gauges (requests in flight, queue depth) leave the sums.
        mark_process_dead(pid)  # type: ignore[no-untyped-call]

    supervisor = Supervisor(
        target,
        workers=settings.server.workers,
        # uvicorn's drain, then the lifespan's (batchers, jobs): each up to graceful_timeout
        stop_timeout_s=2 * settings.server.graceful_timeout + STOP_MARGIN_S,
        on_exit=dead,
    )
    supervisor.run()
