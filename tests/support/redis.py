"""Redis for the Redis-backed tests: the shared test server from $MLSERVE_TEST_REDIS_URL (a
database of its own per parallel test worker), clean-up of a test's keys, and redis-server
processes of a test's own (for outages)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .wait import wait_for

SKIP_REASON = (
    "needs a real redis-server: set MLSERVE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6390/0; "
    ".ci/run starts one)"
)
STOP_S = 20.0
DATABASES = 16  # redis-server's default `databases`


def worker_url(url: str, worker: str | None) -> str:
    """The URL of the database for pytest-xdist worker `worker` (gw0, gw1, ...): the given
    database plus the worker's number, modulo 16. Every test also keys under a prefix of its
    own; the database apart keeps Celery's and kombu's unprefixed keys (unacked messages,
    bindings) of parallel workers apart as well."""
    if not worker or not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    database = (base + int(worker[2:])) % DATABASES
    return urlunsplit(parts._replace(path=f"/{database}"))


# Read at import: the suite's autouse fixture removes every MLSERVE_* variable from each test.
TEST_REDIS_URL = (
    worker_url(url, os.environ.get("PYTEST_XDIST_WORKER"))
    if (url := os.environ.get("MLSERVE_TEST_REDIS_URL", "").strip())
    else None
)


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
        wait_for(self.pong, "redis-server answers", 30, details=self.output, interval=0.05)

    def pong(self) -> bool:
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
