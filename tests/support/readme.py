"""The shell examples of README.md and docs/ as a user's terminal runs them: the fenced ```bash
blocks split into commands, and a Terminal that runs them in bash and `mlserve serve` in the
background.

What is run, rewritten or left out is the business of tests/test_readme_examples.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

STOP_S = 30.0


@dataclass
class Command:
    text: str
    line: int  # in its Markdown file
    expected: str | None = None  # the `# → …` comment under it: the output README shows
    source: str = "README.md"  # the Markdown file it is in


@dataclass
class Block:
    id: str  # the section heading, plus #N when the section has several blocks
    line: int
    text: str
    commands: list[Command] = field(default_factory=list)


def split_commands(lines: list[str], first_line: int, source: str = "README.md") -> list[Command]:
    """A block's commands as a shell reads them: comment-only lines dropped (a `# →` one kept as
    the output of the command above); a trailing `\\`, `|`, `&&` or `||` joins the next line; a
    here-document belongs to its command."""
    commands: list[Command] = []
    current: list[str] = []
    heredoc: str | None = None
    start = first_line
    for number, line in enumerate(lines, first_line):
        if heredoc is not None:
            current.append(line)
            if line.strip() == heredoc:
                heredoc = None
                commands.append(Command("\n".join(current), start, source=source))
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
            commands.append(Command("\n".join(current), start, source=source))
            current = []
    assert not current, f"{source} line {start}: unfinished command {current}"
    return commands


SHELL_FENCES = {"bash", "sh", "shell", "console", "zsh"}


def bash_blocks(markdown: str, source: str = "README.md") -> list[Block]:
    """The fenced ```bash blocks of a Markdown text, in order, with their commands. A fence may
    be indented (inside a list item): its body loses that indentation."""
    found: list[tuple[str, int, list[str]]] = []
    section = "top"
    inside: list[str] | None = None  # the lines of the open fence
    language = ""
    fence_line = 0
    indent = 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if inside is not None:
            if line.strip().startswith("```") and line.strip().strip("`") == "":
                if language == "bash":
                    found.append((section, fence_line, inside))
                inside = None
            else:
                inside.append(line[indent:] if line[:indent].strip() == "" else line)
        elif line.lstrip().startswith("```"):
            indent = len(line) - len(line.lstrip())
            inside, language, fence_line = [], line.strip()[3:].strip(), number
        elif re.match(r"#{1,6} ", line):
            section = line.lstrip("#").strip()
    blocks = []
    for section, fence_line, body in found:
        same = [f for f in found if f[0] == section]
        ordinal = f" #{same.index((section, fence_line, body)) + 1}" if len(same) > 1 else ""
        block = Block(f"{section}{ordinal}", fence_line, "\n".join(body))
        block.commands = split_commands(body, fence_line + 1, source)
        blocks.append(block)
    return blocks


def fence_languages(markdown: str) -> list[tuple[int, str]]:
    """(line, language) of every opening fence of a Markdown text."""
    opened: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if not stripped.startswith("```"):
            continue
        if inside and stripped.strip("`") == "":
            inside = False
        elif not inside:
            inside = True
            opened.append((number, stripped[3:].strip()))
    return opened


SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([A-Za-z0-9_-]+))?"$', re.MULTILINE)


def expand_snippets(markdown: str, root: Path) -> str:
    """The page as the site renders it: each `--8<-- "file"` (or `"file:section"`, the lines
    between `--8<-- [start:section]` and `[end:section]`) line replaced by what it includes, as
    pymdownx.snippets does (mkdocs.yml)."""

    def include(match: re.Match[str]) -> str:
        text = (root / match[1]).read_text(encoding="utf-8")
        if match[2] is None:
            return text
        start = re.search(rf"--8<-- \[start:{match[2]}\].*\n", text)
        end = re.search(rf".*--8<-- \[end:{match[2]}\]", text)
        if start is None or end is None:
            raise ValueError(f"{match[1]} has no section {match[2]!r}")
        return text[start.end() : end.start()]

    return SNIPPET.sub(include, markdown)


def json_keys(expected: str) -> set[str]:
    """The top-level keys of the JSON object README shows (`→ 202 {"job_id": …, …}`); values
    may be elided with `…`, so it is scanned, not parsed."""
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
    """The output as one JSON document, or as JSON lines; [] when it is not JSON."""
    with contextlib.suppress(ValueError):
        return [json.loads(output)]
    with contextlib.suppress(ValueError):
        return [json.loads(line) for line in output.splitlines() if line.strip()]
    return []


@dataclass
class Ran:
    """One command as run, and what went wrong with it (nothing: it passed)."""

    command: Command
    as_run: str
    rc: int | None = None  # None: not reached (the shell exited before it)
    out: str = ""
    err: str = ""
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The command as run, its problems, the end of its output then of its errors."""
        tail = [*self.out.strip().splitlines()[-6:], *self.err.strip().splitlines()[-8:]]
        return (
            f"  {self.command.source} line {self.command.line}: {self.as_run}\n"
            f"    {'; '.join(self.problems)}\n" + "".join(f"    | {t}\n" for t in tail)
        )


@dataclass
class Step:
    """A command to run, as rewritten for this machine, and bash to run after it (or None)."""

    command: Command
    as_run: str
    after: str | None = None


@dataclass
class Terminal:
    """A user's shell: a working folder, an environment, the port of the server it starts.
    Its server is stopped by stop(); the owner calls it, whatever happened."""

    name: str
    cwd: Path
    env: dict[str, str]
    port: int
    logs: Path
    ready_timeout_s: int = 90
    run_timeout_s: float = 240.0
    server: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, step: Step) -> Ran:
        """Start the server command in the background, after stopping the running one (a
        user's Ctrl-C), and wait for it with `mlserve health-check --wait`."""
        ran = Ran(step.command, step.as_run, 0)
        stopped = self.stop()
        if stopped:
            ran.problems.append(f"the server before: {stopped}")
        self.runs += 1
        log = self.logs / f"{self.name}-serve-{self.runs}.log"
        with log.open("wb") as sink:
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {step.as_run}"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole if it hangs
            )
        wait = subprocess.run(
            ["mlserve", "health-check", "--wait", str(self.ready_timeout_s)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.ready_timeout_s + 30,
            check=False,
        )
        ran.out = log.read_text(errors="replace")
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
            code = server.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            return f"the server did not stop within {STOP_S:.0f} s of SIGTERM"
        return None if code == 0 else f"the server exited {code} on SIGTERM"

    def run(self, steps: list[Step]) -> list[Ran]:
        """Run the steps in one bash (`set -uo pipefail`), as pasted at a prompt: each command's
        output and exit status captured, a failure not stopping the next, variables kept."""
        self.runs += 1
        folder = self.logs / f"{self.name}-{self.runs}"
        folder.mkdir()
        script = ["set -uo pipefail"]
        for index, step in enumerate(steps):
            for suffix, text in (("", step.as_run), (".after", step.after)):
                if text is None:
                    continue
                out, err, rc = (shlex.quote(f"{folder / str(index)}.{k}{suffix}") for k in "oer")
                # `}` on a line of its own: the command may end with a comment or a heredoc.
                script += [f"{{ {text}", f"}} >{out} 2>{err}", f"echo $? >{rc}"]
        process = subprocess.Popen(
            ["bash", "-c", "\n".join(script) + "\n"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # what a hung command started is killed with it
        )
        try:
            output = process.communicate(timeout=self.run_timeout_s)[0]
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0] + b"\n(killed: still running after the timeout)"
        results = [Ran(step.command, step.as_run) for step in steps]
        exited = False
        for index, (step, ran) in enumerate(zip(steps, results, strict=True)):
            files = {k: Path(f"{folder / str(index)}.{k}") for k in "oer"}
            if exited:
                ran.problems.append("not reached: the shell exited before it")
                continue
            if not files["o"].exists():  # the shell exited between two commands
                exited = True
                ran.problems.append("not reached: the shell exited before it")
                ran.err = output.decode(errors="replace")
                continue
            ran.out = files["o"].read_text(errors="replace")
            ran.err = files["e"].read_text(errors="replace")
            if not files["r"].exists():  # e.g. an unset variable under set -u
                exited = True
                ran.rc = process.returncode
                ran.problems.append(f"the shell exited in it (status {process.returncode})")
                continue
            ran.rc = int(files["r"].read_text())
            if step.after is not None:
                after_rc = Path(f"{files['r']}.after")
                code = int(after_rc.read_text()) if after_rc.exists() else None
                if code != 0:
                    ran.problems.append(f"the harness's wait after it exited {code}")
                    ran.err += Path(f"{files['e']}.after").read_text(errors="replace")
        return results
