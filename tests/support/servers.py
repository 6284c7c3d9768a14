"""Real `python -m mlserve ...` processes (serve, worker): started with a clean environment,
output to a file (no pipe to fill), readiness polled with a deadline, stopped by their own pid.

Most server tests run the app in-process (`with TestClient(create_app(settings))`); these are
for the few that prove a real server, real signals and real crashes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .metrics import Samples, scrape
from .net import free_port
from .wait import wait_for

TESTS_ROOT = Path(__file__).resolve().parent.parent
READY_S = 90.0  # generous: the machine running the suite may be busy
STOP_S = 20.0


def process_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child mlserve process: the test's, without any MLSERVE_* setting
    from outside (a module-scoped server starts before the per-test isolation) nor a
    PROMETHEUS_MULTIPROC_DIR; MLSERVE_HOME is `home`; unbuffered output; the tests folder on
    PYTHONPATH so test-only estimators unpickle; then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["MLSERVE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


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
class MlserveProcess:
    """One `python -m mlserve ...` process; `url` is set for servers."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    registry: Path | None = None

    @classmethod
    def start(
        cls,
        args: Sequence[str | Path],
        *,
        cwd: Path,
        env: Mapping[str, str],
        name: str,
        url: str = "",
        registry: Path | None = None,
    ) -> MlserveProcess:
        """Start `python -m mlserve ARGS...` (not waiting for it); output to cwd/NAME.log."""
        cwd.mkdir(parents=True, exist_ok=True)
        log = cwd / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlserve", *map(str, args)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
            )
        return cls(name, process, log, url, registry)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = READY_S, path: str = "/api/ready") -> None:
        """Poll `path` until it answers 200; fail at once if the process exits."""

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}:\n{self.output()}"
                )
            return httpx.get(self.url + path, timeout=2).status_code == 200

        wait_for(ready, f"{self.name} ready", timeout, details=self.output, interval=0.05)

    def wait_live(self, timeout: float = READY_S) -> None:
        self.wait_ready(timeout, path="/api/live")

    def wait_log(self, text: str, timeout: float = READY_S) -> None:
        def found() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}:\n{self.output()}"
                )
            return text in self.output()

        wait_for(found, f"'{text}' in the {self.name} log", timeout, details=self.output)

    def terminate(self) -> int:
        """SIGTERM (a graceful shutdown) and the exit code; a process still running STOP_S
        later is killed and the test fails."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.name}: no exit within {STOP_S} s of SIGTERM:\n{self.output()}"
                ) from None
        return self.process.returncode

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it hangs (clean-up: never fails); the exit code."""
        with contextlib.suppress(AssertionError):
            return self.terminate()
        return self.process.returncode

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=10)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10, **kwargs)

    def put_json(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.put(self.url + path, json=body, timeout=10, **kwargs)

    def metrics(self) -> Samples:
        return scrape(self.url + "/metrics")


def serve(
    registry: Path,
    home: Path,
    *,
    port: int | None = None,
    args: Sequence[str | Path] = (),
    env: Mapping[str, str] | None = None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    log_level: str | None = "warning",
    sample: bool = False,
    name: str | None = None,
) -> MlserveProcess:
    """Start `python -m mlserve serve` over `registry` on a free port (not waiting for it).
    MLSERVE_HOME and the working folder are `home` (its state/ holds keys and jobs); `config`
    becomes a --config TOML file; `env` adds MLSERVE_* settings; log_level None keeps the
    default (info); sample=True lets it train the bundled sample into an empty registry."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command: list[str | Path] = ["serve", "--port", str(port), "--registry", registry]
    if not sample:
        command.append("--no-sample")
    if log_level is not None:
        command += ["--log-level", log_level]
    command += list(args)
    if config:
        command += ["--config", write_config(home / f"mlserve-{port}.toml", config)]
    return MlserveProcess.start(
        command,
        cwd=home,
        env=process_env(home, **(env or {})),
        name=name or f"serve-{port}",
        url=f"http://127.0.0.1:{port}",
        registry=registry,
    )


@contextlib.contextmanager
def running(registry: Path, home: Path, **kwargs: Any) -> Iterator[MlserveProcess]:
    """A started, ready `mlserve serve` for the duration of the block (arguments as serve's);
    stopped after, killed if it hangs."""
    proc = serve(registry, home, **kwargs)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def start_worker(
    registry: Path,
    home: Path,
    *,
    env: Mapping[str, str],
    name: str = "worker",
    args: Sequence[str | Path] = (),
) -> MlserveProcess:
    """Start `python -m mlserve worker` over `registry` (not waiting for it)."""
    return MlserveProcess.start(
        ["worker", "--registry", registry, *args],
        cwd=home,
        env=process_env(home, **env),
        name=name,
        registry=registry,
    )


def serve_until_exit(home: Path, cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """A real `python -m mlserve serve ...` expected to end by itself."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "mlserve", "serve", "--port", str(free_port()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=process_env(home),
        check=False,
    )


def one_line_serve_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    message = done.stderr.strip()
    assert message.startswith("error: "), message
    assert "\n" not in message and "Traceback" not in message, message
    assert "mlserve serving" not in done.stderr + done.stdout  # never got to serving
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message
