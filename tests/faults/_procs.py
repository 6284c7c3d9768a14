"""Real `python -m mlserve serve` processes for the fault, fuzz and security suites: settings
through a TOML file and the environment, output to a file, readiness polled with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cli._servers import free_port

READY_S = 60.0  # generous: the machine running the suite may be busy
STOP_S = 15.0
TESTS_ROOT = Path(__file__).resolve().parent.parent


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """A minimal mlserve.toml: [section] key = value (flat values and lists only)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Proc:
    """One `mlserve serve` process."""

    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/api/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)  # polling interval of a bounded wait
        raise AssertionError(f"not ready within {timeout:.0f} s:\n{self.output()}")

    def wait_live(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/api/live", timeout=2).status_code == 200:
                    return
            time.sleep(0.02)  # polling interval of a bounded wait
        raise AssertionError(f"not live within {timeout:.0f} s:\n{self.output()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start(
    registry: Path,
    home: Path,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,
    log_level: str = "warning",
) -> Proc:
    """Start `python -m mlserve serve` over `registry` (not waiting for it). MLSERVE_HOME is
    `home` (its state/ holds keys and jobs); `config` becomes a --config TOML file; the tests
    folder is on PYTHONPATH so test-only estimators unpickle in the server."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVE_")}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    environ["MLSERVE_HOME"] = str(home)
    environ["PYTHONUNBUFFERED"] = "1"
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ.update(env or {})
    command = [
        sys.executable,
        "-m",
        "mlserve",
        "serve",
        "--port",
        str(port),
        "--registry",
        str(registry),
        "--no-sample",
        "--log-level",
        log_level,
        *args,
    ]
    if config:
        command += ["--config", str(write_config(home / f"mlserve-{port}.toml", config))]
    log = home / f"serve-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=home
        )
    return Proc(f"http://127.0.0.1:{port}", port, home, process, log)


@contextlib.contextmanager
def running(registry: Path, home: Path, **kwargs: Any) -> Iterator[Proc]:
    """A started, ready server for the duration of the block; stopped (or killed) after."""
    proc = start(registry, home, **kwargs)
    try:
        proc.wait_ready()
        yield proc
    finally:
        try:
            proc.stop()
        finally:
            proc.kill()
