"""Every ```bash example of README.md runs, in order, as a user would paste it.

The house rule: an example a user cannot paste and run is a bug. README's blocks are lists of
commands with `#` comments, pasted at a prompt: each block runs in one `bash` (`set -uo pipefail`:
an unset variable, such as a `$JOB` no command set, stops the block), command by command; each
command's exit status must be 0, a failure does not stop the next command (as at a prompt), and
variables set by one command serve the next. A trailing `\\`, `|`, `&&` or `||` joins lines; a
here-document belongs to its command. A `# → …` comment under a command is the output README
promises: its top-level JSON keys must be in the command's output. A `curl` answer in an error
shape (`{"error": …}`) fails the example, unless EXPECTED_ERRORS says why README shows one.

The scratch terminal: the working folder is a temporary folder (reviews.csv, mlserve.toml land
there) with a link to the repository's sample_models/ (README's examples run in a clone);
MLSERVE_HOME is one temporary home for every block (one registry, trained once, by README's own
commands); PATH starts with this virtualenv's bin/ (its `mlserve`); no MLSERVE_* variable comes
from outside. Port 8000 is a free port: `localhost:8000`, `127.0.0.1:8000` and `--port 8000` are
rewritten to it, and MLSERVE_SERVER__PORT / MLSERVE_CLIENT__URL give it to the commands that
rely on the default.

`mlserve serve` holds a user's terminal: the harness starts it in the background, after stopping
the one running (the user's Ctrl-C; SIGTERM here, which must exit 0), waits for it with
`mlserve health-check --wait`, and stops every server at the end, failure or not. The quick
start's install lines must not recurse into installing this checkout or running the suite: of
`python3 -m venv .venv && … && pip install -e . && mlserve serve` only `mlserve serve` runs (the
virtualenv running this test is that install), and test_install_and_test_commands_are_what_ci_runs
checks that the install, the test command and the development block are what .ci/run runs.

Rewritten or added by the harness, and nothing else: the port; load tests shortened (2 s, warm-up
1 s) with latency gates 10 times looser (LATENCY_SLACK); a wait for an async job to finish before
its results are read (AFTER). A block that would change the terminal for the blocks after it
(creating an API key turns auth on) runs in a terminal of its own (OWN_TERMINAL). Examples that
need what this machine cannot have are in one table, NOT_RUN, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.net import free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"
VENV_BIN = Path(sys.executable).parent
log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ the tables
# Examples that cannot run here, keyed by a stable part of their text: "block" marks the whole
# block holding the key, "command" the one command holding it. Each key must name exactly one.
NOT_RUN: dict[str, tuple[str, str]] = {
    "pip install -e '.[test]' && pytest": (
        "block",
        "the test command installs this checkout and runs the whole suite, this test included; "
        "test_install_and_test_commands_are_what_ci_runs checks it is the command .ci/run runs",
    ),
    "redis://redis.internal": (
        "block",
        "needs a Redis at redis.internal and a registry volume shared at /shared/mlserve by "
        "several hosts (the Redis-backed behaviour is tested in tests/redis)",
    ),
    "--url http://other:8080": (
        "command",
        "a custom endpoint on the host 'other', which does not exist here (--endpoint custom is "
        "tested in tests/cli/test_loadtest_cmd.py)",
    ),
    "bash .ci/run": (
        "block",
        "the development loop: reinstalls this checkout, runs the whole suite (this test "
        "included) and CI; test_install_and_test_commands_are_what_ci_runs checks it against "
        ".ci/run",
    ),
}

# Blocks that change the terminal for good, run in a terminal of their own: a fresh
# MLSERVE_HOME over the shared registry, its own port, a server started with `mlserve serve`.
OWN_TERMINAL: dict[str, str] = {
    "mlserve keys create": "creating a key turns auth on for every server of its home for the "
    "server's life (README, Authentication); the later examples use the open server",
}

# curl examples whose answer is in the error shape on purpose, keyed by a stable part of the
# command.
EXPECTED_ERRORS: dict[str, str] = {
    '"request_id": "0195c6a4f1e24b8c9d0e1f2a3b4c5d6e"': "a made-up prediction id: the answer "
    "is 404 prediction_not_found (README's table of feedback answers)",
}

# Bash run right after a command, as a user would wait before the next one (keyed by the
# command's exact text): a job is read once it has finished.
AFTER: dict[str, str] = {
    "curl -s http://127.0.0.1:8000/api/jobs/$JOB": """python3 - "$JOB" <<'HARNESS'
import json, sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with urllib.request.urlopen(f"URL/api/jobs/{sys.argv[1]}") as answer:
        status = json.load(answer)["status"]
    if status in ("completed", "failed", "cancelled"):
        sys.exit(status != "completed")
    time.sleep(0.1)
sys.exit(f"job {sys.argv[1]} still {status} after 60 s")
HARNESS""",
}

# The quick start's install lines: only their serve part runs (see the module docstring).
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"
SERVE_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && mlserve serve"

LOADTEST_DURATION = "2s"  # README's 30 s load tests, shortened to keep this test near a minute
LOADTEST_WARMUP = "1s"
# Latency gates (--max-p99-ms 50) are 10 times looser: the suite runs other tests beside this
# one on a few cores, and what is checked here is that the example runs and its gates hold on
# a loaded machine; the gates themselves are tested in tests/cli/test_loadtest_cmd.py.
LATENCY_SLACK = 10
SEGMENT_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 90


# ------------------------------------------------------------------------------ README's blocks
@dataclass
class Command:
    text: str
    line: int
    expected: str | None = None  # the `# → …` comment under it


@dataclass
class Block:
    id: str  # section heading, plus #N when the section has several blocks
    line: int
    text: str
    commands: list[Command] = field(default_factory=list)


def split_commands(lines: list[str], first_line: int) -> list[Command]:
    """A block's commands: comment-only lines dropped (a `# →` one kept as the output of the
    command above), a trailing backslash joining lines, a here-document kept with its command."""
    commands: list[Command] = []
    current: list[str] = []
    heredoc: str | None = None
    start = first_line
    for number, line in enumerate(lines, first_line):
        if heredoc is not None:
            current.append(line)
            if line.strip() == heredoc:
                heredoc = None
                commands.append(Command("\n".join(current), start))
                current = []
            continue
        stripped = line.strip()
        if not current:
            if not stripped:
                continue
            if stripped.startswith("#"):
                if stripped.startswith("# →") and commands:
                    commands[-1].expected = stripped.removeprefix("#").strip()
                continue
            start = number
        current.append(line)
        marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if marker:
            heredoc = marker.group(1)
        elif not line.rstrip().endswith(("\\", "|", "&&", "||")):
            commands.append(Command("\n".join(current), start))
            current = []
    assert not current, f"README.md line {start}: unfinished command {current}"
    return commands


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced ```bash blocks of README.md, in order."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[tuple[str, int, list[str]]] = []
    section = "top"
    inside: list[str] | None = None  # the lines of the open fence
    language = ""
    fence_line = 0
    for number, line in enumerate(lines, 1):
        if inside is not None:
            if line.startswith("```"):
                if language == "bash":
                    found.append((section, fence_line, inside))
                inside = None
            else:
                inside.append(line)
        elif line.startswith("```"):
            inside, language, fence_line = [], line[3:].strip(), number
        elif re.match(r"#{1,6} ", line):
            section = line.lstrip("#").strip()
    blocks = []
    for section, fence_line, body in found:
        same = [f for f in found if f[0] == section]
        ordinal = f" #{same.index((section, fence_line, body)) + 1}" if len(same) > 1 else ""
        block = Block(f"{section}{ordinal}", fence_line, "\n".join(body))
        block.commands = split_commands(body, fence_line + 1)
        blocks.append(block)
    return blocks


def marks(block: Block) -> tuple[str | None, dict[int, str]]:
    """The NOT_RUN reason of the whole block, and of single commands by index."""
    block_reason = None
    command_reasons: dict[int, str] = {}
    for key, (scope, reason) in NOT_RUN.items():
        if scope == "block" and key in block.text:
            block_reason = reason
        for index, command in enumerate(block.commands):
            if scope == "command" and key in command.text:
                command_reasons[index] = reason
    return block_reason, command_reasons


# ------------------------------------------------------------------------------ checks
def json_keys(expected: str) -> set[str]:
    """The top-level keys of the JSON object README shows (`→ 202 {"job_id": …, …}`); the
    values may be elided with `…`, so it is scanned, not parsed."""
    body = re.sub(r"^→\s*(\d{3}\s+)?", "", expected)
    keys: set[str] = set()
    depth = 0
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]', body)
    for index, token in enumerate(tokens):
        if token in "{[":
            depth += 1
        elif token in "}]":
            depth -= 1
        elif token.startswith('"') and depth == 1 and tokens[index + 1 : index + 2] == [":"]:
            keys.add(json.loads(token))
    return keys


def json_documents(output: str) -> list[object]:
    """The output as one JSON document, or JSON lines; [] when it is not JSON."""
    with contextlib.suppress(ValueError):
        return [json.loads(output)]
    with contextlib.suppress(ValueError):
        return [json.loads(line) for line in output.splitlines() if line.strip()]
    return []


def for_this_machine(command: str, port: int) -> str:
    """The command as run here: port 8000 is `port`, load tests are shortened."""
    command = re.sub(r"\b(?:localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{port}", command)
    command = re.sub(r"--port 8000\b", f"--port {port}", command)
    if "mlserve loadtest" in command:
        command = re.sub(r"--warmup \S+", f"--warmup {LOADTEST_WARMUP}", command)
        command = re.sub(
            r"(--max-p[\d.]+-ms) ([\d.]+)",
            lambda gate: f"{gate[1]} {float(gate[2]) * LATENCY_SLACK:g}",
            command,
        )
        if re.search(r"(--duration|-d) ", command):
            command = re.sub(r"(--duration|-d) \S+", f"--duration {LOADTEST_DURATION}", command)
        else:  # at the front: the command's end may be a comment
            command = command.replace(
                "mlserve loadtest", f"mlserve loadtest --duration {LOADTEST_DURATION}", 1
            )
    return command


@dataclass
class Ran:
    """One command as run, and what went wrong with it (nothing: it passed)."""

    command: Command
    as_run: str
    rc: int | None  # None: not reached (the shell exited before it)
    out: str = ""
    err: str = ""
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The command as run, its problems, and the end of its output then of its errors."""
        tail = [*self.out.strip().splitlines()[-6:], *self.err.strip().splitlines()[-8:]]
        return (
            f"  README.md line {self.command.line}: {self.as_run}\n"
            f"    {'; '.join(self.problems)}\n" + "".join(f"    | {t}\n" for t in tail)
        )


def check(ran: Ran) -> None:
    command = ran.command
    if ran.rc is None:
        ran.problems.append("not run: the shell exited before it")
        return
    if ran.rc != 0:
        ran.problems.append(f"exit status {ran.rc}")
    documents = json_documents(ran.out)
    if command.expected is not None:
        keys = json_keys(command.expected)
        if keys:
            found = documents[0] if documents else None
            if not isinstance(found, dict) or not keys <= found.keys():
                ran.problems.append(f"README shows {sorted(keys)}; the output has not those keys")
    if command.text.lstrip().startswith("curl") and not any(
        key in command.text for key in EXPECTED_ERRORS
    ):
        # The error shapes: {"error": {"code", "message"}}, V2's {"error": "..."}; a job's
        # status has "error": null until it fails.
        if any(isinstance(d, dict) and d.get("error") is not None for d in documents):
            ran.problems.append("the answer is an error")


# ------------------------------------------------------------------------------ the terminal
@dataclass
class Terminal:
    """A user's shell: a working folder, an environment, a port for the server it starts."""

    name: str
    cwd: Path
    env: dict[str, str]
    port: int
    logs: Path
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, command: Command, as_run: str) -> Ran:
        """Start `mlserve serve …` in the background (stopping the running one first) and wait
        for it with `mlserve health-check --wait`."""
        ran = Ran(command, as_run, 0)
        stopped = self.stop()
        if stopped:
            ran.problems.append(stopped)
        self.runs += 1
        self.server_log = self.logs / f"{self.name}-serve-{self.runs}.log"
        with self.server_log.open("wb") as sink:
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {as_run}"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait = subprocess.run(
            ["mlserve", "health-check", "--wait", str(READY_TIMEOUT_S)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT_S + 30,
            check=False,
        )
        ran.out = self.server_log.read_text(errors="replace")
        if wait.returncode != 0:
            exited = self.server.poll()
            ran.rc = exited if exited is not None else wait.returncode
            ran.problems.append(
                f"not ready: health-check --wait exited {wait.returncode}"
                + (f", the server exited {exited}" if exited is not None else "")
            )
            ran.err = wait.stdout + wait.stderr
        return ran

    def stop(self) -> str | None:
        """Stop the server (SIGTERM, as Ctrl-C would; killed if it hangs): a problem, or None."""
        server, self.server = self.server, None
        if server is None:
            return None
        if server.poll() is not None:
            return f"the server had exited with status {server.returncode}"
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            return "the server did not stop within 30 s of SIGTERM"
        return None if code == 0 else f"the server exited {code} on SIGTERM"

    def run(self, commands: list[Command]) -> list[Ran]:
        """Run commands in one bash, each one's output and exit status captured, as pasted."""
        self.runs += 1
        folder = self.logs / f"{self.name}-{self.runs}"
        folder.mkdir()
        script = ["set -uo pipefail"]
        planned: list[Ran] = []
        for index, command in enumerate(commands):
            as_run = for_this_machine(command.text, self.port)
            planned.append(Ran(command, as_run, None))
            files = {k: shlex.quote(str(folder / f"{index}.{k}")) for k in ("out", "err", "rc")}
            script += [
                f"{{ {as_run}",
                f"}} >{files['out']} 2>{files['err']}",
                f"echo $? >{files['rc']}",
            ]
            hook = AFTER.get(command.text)
            if hook:
                hook_files = {k: f"{files[k]}.after" for k in files}
                script += [
                    f"{{ {hook.replace('URL/', self.url + '/')}",
                    f"}} >{hook_files['out']} 2>{hook_files['err']}",
                    f"echo $? >{hook_files['rc']}",
                ]
        process = subprocess.Popen(
            ["bash", "-c", "\n".join(script) + "\n"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output = process.communicate(timeout=SEGMENT_TIMEOUT_S)[0]
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0] + b"\n(killed: still running after the timeout)"
        shell_output = output.decode(errors="replace")
        for index, ran in enumerate(planned):
            base = folder / str(index)
            if base.with_suffix(".out").exists():
                ran.out = base.with_suffix(".out").read_text(errors="replace")
                ran.err = base.with_suffix(".err").read_text(errors="replace")
            rc_file = base.with_suffix(".rc")
            ran.rc = int(rc_file.read_text()) if rc_file.exists() else None
            check(ran)
            after = Path(f"{base}.rc.after")
            if ran.command.text in AFTER and ran.rc is not None:
                code = int(after.read_text()) if after.exists() else None
                if code != 0:
                    ran.problems.append(f"waiting after it (the harness) exited {code}")
                    ran.err += Path(f"{base}.err.after").read_text(errors="replace")
            if ran.rc is None and not any(p.rc is None for p in planned[:index]):
                ran.err = shell_output  # the first one not reached: why the shell exited
        return planned


def base_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["MLSERVE_HOME"] = str(home)
    env["MLSERVE_SERVER__PORT"] = str(port)
    env["MLSERVE_CLIENT__URL"] = f"http://127.0.0.1:{port}"
    return env


@contextlib.contextmanager
def terminals(tmp_path: Path) -> Iterator[dict[str, Terminal]]:
    """The main terminal (and the ones opened for OWN_TERMINAL blocks); every server they
    started is stopped on the way out, whatever happened."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "sample_models").symlink_to(REPO_ROOT / "sample_models")
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    opened = {"main": Terminal("main", cwd, base_env(tmp_path / "home", port), port, logs)}
    try:
        yield opened
    finally:
        for terminal in opened.values():
            terminal.stop()


def own_terminal(main: Terminal, name: str, tmp_path: Path) -> Terminal:
    port = free_port()
    env = base_env(tmp_path / f"home-{name}", port)
    env["MLSERVE_REGISTRY__PATH"] = str(Path(main.env["MLSERVE_HOME"]) / "registry")
    return Terminal(name, main.cwd, env, port, main.logs)


# ------------------------------------------------------------------------------ the tests
def run_block(terminal: Terminal, block: Block) -> list[Ran]:
    """Run a block's commands; a server command splits it (the server runs in the background)."""
    _, not_run = marks(block)
    results: list[Ran] = []
    pending: list[Command] = []
    for index, command in enumerate(block.commands):
        if index in not_run:
            results += terminal.run(pending) if pending else []
            pending = []
            continue
        text = command.text
        if text == SERVE_COMMAND:
            text = "mlserve serve"  # its install part is checked by the CI test below
        if text.startswith("mlserve serve"):
            results += terminal.run(pending) if pending else []
            pending = []
            results.append(terminal.serve(command, for_this_machine(text, terminal.port)))
        else:
            pending.append(command)
    results += terminal.run(pending) if pending else []
    return results


@pytest.mark.timeout(900)
def test_readme_shell_examples_run_as_written(tmp_path: Path) -> None:
    """Run every README bash block in order; fail listing each command that failed."""
    assert (VENV_BIN / "mlserve").exists(), f"no mlserve in {VENV_BIN}"
    report: list[str] = []
    failures: list[str] = []
    with terminals(tmp_path) as opened:
        main = opened["main"]
        for block in readme_blocks():
            reason, command_reasons = marks(block)
            if reason is not None:
                report.append(f"{block.id}: not run: {reason}")
                continue
            own = next((k for k in OWN_TERMINAL if k in block.text), None)
            if own is None:
                results = run_block(main, block)
            else:
                terminal = opened[block.id] = own_terminal(main, f"t{len(opened)}", tmp_path)
                start = Command("mlserve serve", block.line)  # README's quick-start server
                results = [terminal.serve(start, "mlserve serve"), *run_block(terminal, block)]
                stopped = terminal.stop()
                if stopped:
                    results[0].problems.append(stopped)
            failed = [r for r in results if r.problems]
            skipped = "".join(f"; 1 command not run: {r}" for r in command_reasons.values())
            where = " (own terminal)" if own else ""
            if failed:
                report.append(f"{block.id}{where}: FAILED {len(failed)} of {len(results)}{skipped}")
                failures.append(
                    f"{block.id} (README.md line {block.line}):\n"
                    + "".join(r.describe() for r in failed)
                )
            else:
                report.append(f"{block.id}{where}: passed {len(results)} commands{skipped}")
        stopped = main.stop()
        if stopped:
            failures.append(f"the last server: {stopped}")
    log.info("README examples:\n%s", "\n".join(report))
    assert not failures, "\n".join(report) + "\n\n" + "\n".join(failures)


def test_install_and_test_commands_are_what_ci_runs() -> None:
    """The quick start's install lines and the development block are what .ci/run runs."""
    ci = CI_RUN.read_text(encoding="utf-8")
    commands = [c.text for b in readme_blocks() for c in b.commands]
    assert TEST_COMMAND in commands
    assert TEST_COMMAND in ci.splitlines()
    assert SERVE_COMMAND in commands
    # The serve line installs what the test line does, without the test extra.
    install = TEST_COMMAND.removesuffix(" && pytest").replace("'.[test]'", ".")
    assert SERVE_COMMAND == f"{install} && mlserve serve"
    development = next(b for b in readme_blocks() if "bash .ci/run" in b.text)
    for command in development.commands:
        text = re.sub(r"\s+#.*$", "", command.text)
        if text == "bash .ci/run":
            continue
        for part in text.split(" && "):
            assert part in ci, f"README's development command {part!r} is not in .ci/run"


def test_every_table_entry_names_one_readme_example() -> None:
    """NOT_RUN, OWN_TERMINAL, EXPECTED_ERRORS and AFTER cannot outlive the example they name."""
    blocks = readme_blocks()
    commands = [c.text for b in blocks for c in b.commands]
    for key, (scope, _) in NOT_RUN.items():
        if scope == "block":
            assert sum(key in b.text for b in blocks) == 1, f"NOT_RUN {key!r}"
        else:
            assert scope == "command"
            assert sum(key in c for c in commands) == 1, f"NOT_RUN {key!r}"
    for key in OWN_TERMINAL:
        assert sum(key in b.text for b in blocks) == 1, f"OWN_TERMINAL {key!r}"
    for key in EXPECTED_ERRORS:
        assert sum(key in c for c in commands) == 1, f"EXPECTED_ERRORS {key!r}"
    for key in AFTER:
        assert commands.count(key) == 1, f"AFTER {key!r}"


def test_commands_are_split_as_a_shell_reads_them() -> None:
    text = "\n".join(
        [
            "```bash",
            "# a comment",
            "mlserve models list       # trailing comment",
            "curl -s -d '{}' \\",
            "  http://127.0.0.1:8000/x",
            '# → 202 {"job_id": "6f1c…", "nested": {"inner": 1}, "items": [{"a": 1}, …]}',
            "python3 - <<'EOF'",
            "print(1)",
            "EOF",
            "```",
        ]
    )
    (block,) = readme_blocks(text)
    assert [c.text for c in block.commands] == [
        "mlserve models list       # trailing comment",
        "curl -s -d '{}' \\\n  http://127.0.0.1:8000/x",
        "python3 - <<'EOF'\nprint(1)\nEOF",
    ]
    expected = block.commands[1].expected
    assert expected is not None
    assert json_keys(expected) == {"job_id", "nested", "items"}
    assert (
        for_this_machine(block.commands[1].text, 9) == "curl -s -d '{}' \\\n  http://127.0.0.1:9/x"
    )
    assert (
        for_this_machine("mlserve loadtest --rate 5   # c", 9)
        == f"mlserve loadtest --duration {LOADTEST_DURATION} --rate 5   # c"
    )
    assert for_this_machine("mlserve loadtest -d 30s --max-p99-ms 50 --max-p50-ms 2.5", 9) == (
        f"mlserve loadtest --duration {LOADTEST_DURATION} --max-p99-ms 500 --max-p50-ms 25"
    )
