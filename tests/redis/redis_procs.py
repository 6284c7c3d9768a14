"""Real processes for the scale-out tests: `python -m mlserve serve|worker` and redis-server.

Output goes to files (no pipe to fill), readiness is polled with deadlines, and every process
is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TESTS_ROOT = Path(__file__).resolve().parent.parent
# Read at import: the suite's autouse fixture removes every MLSERVE_* variable from each test.
TEST_REDIS_URL = os.environ.get("MLSERVE_TEST_REDIS_URL", "").strip() or None
SKIP_REASON = (
    "needs a real redis-server: set MLSERVE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6390/0; "
    ".ci/run starts one)"
)
READY_S = 90.0  # generous: the machine running the suite may be busy
STOP_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def delete_prefixed(url: str, prefix: str) -> None:
    """Remove every key under `prefix` (a test's own keys) from the Redis at `url`."""
    from redis import Redis

    with Redis.from_url(url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        keys += list(client.scan_iter(match="_kombu.binding*." + prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        # Messages a killed worker left unacknowledged (kombu restores them after an hour).
        for tag, raw in client.hscan_iter("unacked"):
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError, TypeError):
                continue
            if str(routing_key).startswith(prefix):
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


def wait_for(check: Callable[[], Any], what: str, timeout: float, log: Callable[[], str]) -> Any:
    """Poll `check` until it returns something true; fail with `what` and the logs."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log()}")
        time.sleep(0.05)  # polling interval of a bounded wait


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any MLSERVE_* setting from outside, plus `extra`; the
    tests folder on PYTHONPATH so processes can unpickle test-only estimators."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["MLSERVE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    """One `python -m mlserve ...` process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @classmethod
    def start(
        cls, name: str, args: list[str], *, cwd: Path, env: Mapping[str, str], url: str = ""
    ) -> Proc:
        log = cwd / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlserve", *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
            )
        return cls(name, process, log, url)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited {self.process.returncode}")
            return httpx.get(self.url + "/api/ready", timeout=2).status_code == 200

        wait_for(ready, f"{self.name} ready", READY_S, self.output)

    def wait_log(self, text: str, timeout: float = READY_S) -> None:
        def found() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited {self.process.returncode}")
            return text in self.output()

        wait_for(found, f"'{text}' in the {self.name} log", timeout, self.output)

    def terminate(self) -> int:
        """SIGTERM (a graceful shutdown); SIGKILL if it hangs."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"{self.name}: no exit within {STOP_S} s of SIGTERM") from None
        return self.process.returncode

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


@dataclass
class RedisServer:
    """A redis-server of the test's own, on a fixed port, persisting to an append-only file
    (fsync on every write) so that a restart brings the data back, as a production Redis
    configured for jobs does."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with (self.folder / "redis.log").open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.folder),
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--save", "",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(self._pong, "redis-server answers", 30, self.output)

    def _pong(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{self.output()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False  # not listening yet

    def output(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; waits for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
