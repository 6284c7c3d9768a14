"""A reader that goes away (`mlserve predict ... | head`) ends a command as it ends Unix tools
killed by SIGPIPE: exit 141, nothing on stderr (no "internal error", no "Exception ignored ...
BrokenPipeError" from the interpreter). Real processes, real pipes closed early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.servers import MlserveProcess

from mlserve.cli import _common

pytestmark = pytest.mark.slow

SIGPIPE_EXIT = 141  # what a shell reports for a process killed by SIGPIPE (128 + 13)
TIMEOUT_S = 120


@pytest.fixture(params=["buffered", "unbuffered"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The test's environment, with and without PYTHONUNBUFFERED (deploy/Dockerfile sets it)."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if request.param == "unbuffered":
        env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def many_texts(tmp_path: Path) -> Path:
    """Inputs whose answers are far more than a pipe holds (64 KiB)."""
    path = tmp_path / "many.txt"
    path.write_text("".join(f"good great day {i}\n" for i in range(3000)), encoding="utf-8")
    return path


def mlserve(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "mlserve", *map(str, args)]


def run_into_closed_pipe(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            argv, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env,
            timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def run_and_read_one_line(argv: list[str], env: dict[str, str]) -> tuple[int, str, bytes]:
    """Run with stdout a pipe; read one line, then close the pipe (as `| head -n 1` does)."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        return proc.wait(timeout=TIMEOUT_S), stderr, first


@pytest.fixture
def local(server: MlserveProcess) -> list[str]:
    return ["--local", "--registry", str(server.registry), "-m", "sentiment"]


def test_predict_json_into_a_closed_pipe_exits_141_silently(
    env: dict[str, str], many_texts: Path, local: list[str]
) -> None:
    code, stderr = run_into_closed_pipe(mlserve("predict", "-f", many_texts, *local, "--json"), env)
    assert (code, stderr) == (SIGPIPE_EXIT, "")


def test_predict_table_read_by_head_exits_141_silently(
    env: dict[str, str], many_texts: Path, local: list[str]
) -> None:
    # The table is one large write that the closing pipe cuts short.
    code, stderr, first = run_and_read_one_line(mlserve("predict", "-f", many_texts, *local), env)
    assert first.strip() == b"sentiment:1"
    assert (code, stderr) == (SIGPIPE_EXIT, "")


def test_predict_through_the_server_piped_to_head_in_a_shell(
    env: dict[str, str], many_texts: Path, server: MlserveProcess
) -> None:
    """`mlserve predict ... | head -n 1` in bash: head prints one row, PIPESTATUS says 141."""
    argv = " ".join(mlserve("predict", "-f", many_texts, "-m", "sentiment", "--json",
                            "--url", server.url))  # fmt: skip
    script = f'{argv} 2>stderr.txt | head -n 1; echo "${{PIPESTATUS[0]}}" > status.txt'
    cwd = many_texts.parent
    subprocess.run(["bash", "-c", script], cwd=cwd, env=env, timeout=TIMEOUT_S, check=True,
                   capture_output=True)  # fmt: skip
    assert (cwd / "status.txt").read_text().strip() == str(SIGPIPE_EXIT)
    assert (cwd / "stderr.txt").read_text() == ""


def test_loadtest_report_read_by_head_exits_141_silently(
    env: dict[str, str], server: MlserveProcess
) -> None:
    argv = mlserve("loadtest", "--url", server.url, "-m", "sentiment", "--requests", "20",
                   "--concurrency", "1")  # fmt: skip
    code, stderr, first = run_and_read_one_line(argv, env)
    assert first.startswith(b"POST ")
    assert (code, stderr) == (SIGPIPE_EXIT, "")


def test_a_rich_table_into_a_closed_pipe_exits_141_silently(
    env: dict[str, str], server: MlserveProcess
) -> None:
    code, stderr = run_into_closed_pipe(mlserve("models", "list", "--registry", server.registry),
                                        env)  # fmt: skip
    assert (code, stderr) == (SIGPIPE_EXIT, "")


def test_an_error_is_still_reported_when_stdout_is_closed(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Nothing was written to the closed pipe: the real failure is what the user hears of."""
    argv = mlserve("predict", "hello", "--local", "--registry", tmp_path / "nothing-here")
    code, stderr = run_into_closed_pipe(argv, env)
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr


def test_output_written_in_full_before_the_reader_leaves_exits_0(
    env: dict[str, str], server: MlserveProcess
) -> None:
    """As `seq 3 | head -n 1` exits 0: a write that completed did not fail."""
    argv = mlserve("predict", "good", "-m", "sentiment", "--json", "--url", server.url)
    code, stderr, first = run_and_read_one_line(argv, env)
    assert b'"prediction"' in first
    assert (code, stderr) == (0, "")


# ---------------------------------------------------------------------------- which pipe broke
def test_output_closed_tells_a_gone_reader_from_another_broken_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    with open(write_end, "w") as stream:  # closes write_end
        monkeypatch.setattr(sys, "stdout", stream)
        monkeypatch.setattr(sys, "stderr", stream)
        # A BrokenPipeError while our output is still read (another process's pipe, say) is a
        # failure to report, not a reason to exit quietly.
        assert _common.output_closed() is False
        os.close(read_end)
        assert _common.output_closed() is True
        monkeypatch.undo()
