"""Every ```bash example of README.md and of the docs site runs, in order, as a user would paste it.

The house rule: an example a user cannot paste and run is a bug. README.md runs on its own, in
a terminal of its own; the pages of docs/ run one after the other in mkdocs.yml's nav order, in
one terminal (the site is read in that order: Getting started trains and serves what the later
pages use), with the files they include (`--8<--`) expanded as the site shows them. The blocks
are lists of commands with `#` comments, pasted at a prompt: each block runs in one `bash`
(`set -uo pipefail`: an unset variable, such as a `$JOB` no command set, stops the block),
command by command; each
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
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.net import free_port
from support.readme import (
    SHELL_FENCES,
    Block,
    Command,
    Ran,
    Step,
    Terminal,
    bash_blocks,
    expand_snippets,
    fence_languages,
    json_documents,
    json_keys,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MKDOCS = REPO_ROOT / "mkdocs.yml"
CI_RUN = REPO_ROOT / ".ci" / "run"
VENV_BIN = Path(sys.executable).parent
log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ the tables
# Examples that cannot run here, keyed by a stable part of their text: "block" marks every block
# holding the key, "command" every command holding it (README.md and Getting started show the
# same quick start). Each key must name at least one.
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
    "--model-path /models/iris.joblib": (
        "block",
        "serves files from a container's /models volume, which this machine does not have, and "
        "would replace the server the later examples talk to (--model-path is tested with real "
        "servers in tests/test_model_path.py)",
    ),
    "bash .ci/run": (
        "block",
        "the development loop: reinstalls this checkout, runs the whole suite (this test "
        "included) and CI; test_install_and_test_commands_are_what_ci_runs checks it against "
        ".ci/run",
    ),
    "pip install --group docs": (
        "block",
        "installs the docs group into this virtualenv and builds the site: .ci/run runs these "
        "commands (test_docs_commands_are_what_ci_runs checks it)",
    ),
    "python bench/run.py": (
        "block",
        "the full benchmark (~8 minutes, wrk from apt-get, the machine to itself); bench/ is run "
        "by hand and its figures are recorded in docs/benchmarks.md",
    ),
    "docker build -f deploy/Dockerfile -t mlserve:local": (
        "block",
        "needs a Docker daemon, which this machine lacks; .ci/image builds deploy/Dockerfile "
        "with buildah and runs the image",
    ),
    "deploy/lock": (
        "block",
        "re-resolves the image's locks from the package index; tests/test_image_lock.py checks "
        "the committed locks against pyproject.toml",
    ),
    "docker run --rm -i mlserve:local": (
        "command",
        "needs the image built with Docker; the same `mlserve keys hash` runs in the "
        "Security page's example",
    ),
    '"sha256": "<hex>"}]': (
        "block",
        "a placeholder hash for a container's environment (and setting it here would turn auth "
        "on for the examples after it); keys given as hashes are tested in tests/test_keys.py",
    ),
    "docker compose -f deploy/docker-compose.yml": (
        "block",
        "the Docker Compose stack needs a Docker daemon; tests/test_deploy.py checks the compose "
        "file, nginx's config and Prometheus' rules",
    ),
    "http://127.0.0.1:8080/api/ready": (
        "block",
        "talks to the Docker Compose stack's nginx on port 8080, which needs a Docker daemon",
    ),
    "kubectl apply -k deploy/k8s": (
        "block",
        "needs a Kubernetes cluster and an image registry; tests/test_deploy.py and "
        "tests/test_deploy_platforms.py validate the manifests",
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


# ------------------------------------------------------------------------------ documents
def readme_blocks() -> list[Block]:
    return bash_blocks(README.read_text(encoding="utf-8"))


def nav_pages() -> list[Path]:
    """The docs pages in mkdocs.yml's nav order."""

    class Loader(yaml.SafeLoader):
        """mkdocs.yml's `!!python/name:` tags (Mermaid's fence) read as nothing."""

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load(MKDOCS.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    pages: list[Path] = []

    def walk(item: object) -> None:
        if isinstance(item, str):
            pages.append(DOCS / item)
        elif isinstance(item, dict):
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(config["nav"])
    return pages


def page_text(page: Path) -> str:
    return expand_snippets(page.read_text(encoding="utf-8"), REPO_ROOT)


def docs_blocks() -> list[Block]:
    """Every page's blocks, in nav order; a block's id names its page."""
    blocks = []
    for page in nav_pages():
        source = page.relative_to(REPO_ROOT).as_posix()
        for block in bash_blocks(page_text(page), source):
            block.id = f"{source}: {block.id}"
            blocks.append(block)
    return blocks


def all_blocks() -> list[Block]:
    return readme_blocks() + docs_blocks()


# ------------------------------------------------------------------------------ policy


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


def check(ran: Ran) -> None:
    """What README promises of a command that ran: exit 0, the output it shows, no error."""
    command = ran.command
    if ran.rc is None:
        return  # not reached: already said
    if ran.rc != 0:
        ran.problems.append(f"exit status {ran.rc}")
    documents = json_documents(ran.out)
    if command.expected is not None:
        keys = json_keys(command.expected)
        found = documents[0] if documents else None
        if keys and (not isinstance(found, dict) or not keys <= found.keys()):
            ran.problems.append(f"README shows {sorted(keys)}; the output has not those keys")
    if command.text.lstrip().startswith("curl") and not any(
        key in command.text for key in EXPECTED_ERRORS
    ):
        # The error shapes: {"error": {"code", "message"}}, V2's {"error": "..."}; a job's
        # status has "error": null until it fails.
        if any(isinstance(d, dict) and d.get("error") is not None for d in documents):
            ran.problems.append("the answer is an error")


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
    """A terminal with a fresh MLSERVE_HOME over the main one's registry, and its own port."""
    port = free_port()
    env = base_env(tmp_path / f"home-{name}", port)
    env["MLSERVE_REGISTRY__PATH"] = str(Path(main.env["MLSERVE_HOME"]) / "registry")
    return Terminal(name, main.cwd, env, port, main.logs)


def run_block(terminal: Terminal, block: Block) -> list[Ran]:
    """Run a block's commands, checked; a server command runs in the background between the
    commands before and after it."""
    _, not_run = marks(block)
    results: list[Ran] = []
    pending: list[Step] = []

    def flush() -> None:
        results.extend(terminal.run(pending) if pending else [])
        pending.clear()

    for index, command in enumerate(block.commands):
        if index in not_run:
            flush()
            continue
        text = "mlserve serve" if command.text == SERVE_COMMAND else command.text
        as_run = for_this_machine(text, terminal.port)
        if text.startswith("mlserve serve"):
            flush()
            results.append(terminal.serve(Step(command, as_run)))
            continue
        after = AFTER.get(command.text)
        pending.append(Step(command, as_run, after and after.replace("URL/", terminal.url + "/")))
    flush()
    for ran in results:
        check(ran)
    return results


# ------------------------------------------------------------------------------ the tests
def run_examples(blocks: list[Block], tmp_path: Path) -> None:
    """Run the blocks in order in one terminal; fail listing each command that failed."""
    assert (VENV_BIN / "mlserve").exists(), f"no mlserve in {VENV_BIN}"
    report: list[str] = []
    failures: list[str] = []
    with terminals(tmp_path) as opened:
        main = opened["main"]
        for block in blocks:
            reason, command_reasons = marks(block)
            if reason is not None:
                report.append(f"{block.id}: not run: {reason}")
                continue
            own = next((k for k in OWN_TERMINAL if k in block.text), None)
            if own is None:
                results = run_block(main, block)
            else:  # its own server: README's `mlserve serve`, stopped after the block
                terminal = opened[block.id] = own_terminal(main, f"t{len(opened)}", tmp_path)
                start = terminal.serve(Step(Command("mlserve serve", block.line), "mlserve serve"))
                results = [start, *run_block(terminal, block)]
                stopped = terminal.stop()
                if stopped:
                    start.problems.append(stopped)
            failed = [r for r in results if r.problems]
            skipped = "".join(f"; 1 command not run: {r}" for r in command_reasons.values())
            where = " (own terminal and server)" if own else ""
            if failed:
                report.append(f"{block.id}{where}: FAILED {len(failed)} of {len(results)}{skipped}")
                source = block.commands[0].source if block.commands else "?"
                failures.append(
                    f"{block.id} ({source} line {block.line}):\n"
                    + "".join(r.describe() for r in failed)
                )
            else:
                report.append(f"{block.id}{where}: passed {len(results)} commands{skipped}")
        stopped = main.stop()
        if stopped:
            failures.append(f"the last server: {stopped}")
    log.info("Examples:\n%s", "\n".join(report))
    assert not failures, "\n".join(report) + "\n\n" + "\n".join(failures)


@pytest.mark.timeout(300)
def test_readme_shell_examples_run_as_written(tmp_path: Path) -> None:
    """README.md's blocks, in order, in a terminal of their own."""
    run_examples(readme_blocks(), tmp_path)


@pytest.mark.timeout(900)
def test_docs_shell_examples_run_as_written(tmp_path: Path) -> None:
    """Every docs page's blocks, in nav order, in one terminal."""
    run_examples(docs_blocks(), tmp_path)


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
    getting_started = [
        c.text for b in bash_blocks(page_text(DOCS / "getting-started.md")) for c in b.commands
    ]
    assert TEST_COMMAND in getting_started
    assert SERVE_COMMAND in getting_started
    development = next(b for b in readme_blocks() if "bash .ci/run" in b.text)
    for command in development.commands:
        text = re.sub(r"\s+#.*$", "", command.text)
        if text == "bash .ci/run":
            continue
        for part in text.split(" && "):
            assert part in ci, f"README's development command {part!r} is not in .ci/run"


def test_docs_commands_are_what_ci_runs() -> None:
    """README's commands that build the docs site are what .ci/run runs."""
    ci = CI_RUN.read_text(encoding="utf-8")
    (block,) = [b for b in readme_blocks() if "pip install --group docs" in b.text]
    for command in block.commands:
        text = re.sub(r"\s+#.*$", "", command.text)
        assert text.startswith(("pip install", "mkdocs build --strict")), text
        for part in text.split(" && "):
            assert part.split(" --site-dir")[0] in ci, (
                f"README's docs command {part!r} is not in .ci/run"
            )


def test_every_table_entry_names_an_example() -> None:
    """NOT_RUN, OWN_TERMINAL, EXPECTED_ERRORS and AFTER cannot outlive the example they name."""
    blocks = all_blocks()
    commands = [c.text for b in blocks for c in b.commands]
    for key, (scope, _) in NOT_RUN.items():
        if scope == "block":
            assert any(key in b.text for b in blocks), f"NOT_RUN {key!r}"
        else:
            assert scope == "command"
            assert any(key in c for c in commands), f"NOT_RUN {key!r}"
    for key in OWN_TERMINAL:
        assert any(key in b.text for b in blocks), f"OWN_TERMINAL {key!r}"
    for key in EXPECTED_ERRORS:
        assert any(key in c for c in commands), f"EXPECTED_ERRORS {key!r}"
    for key in AFTER:
        assert key in commands, f"AFTER {key!r}"


def test_every_docs_page_is_in_the_site_and_its_shell_blocks_are_bash() -> None:
    """A page left out of the nav, or a shell example fenced as `sh`/`console`, would escape
    the examples tests."""
    pages = nav_pages()
    on_disk = sorted(p for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk
    for path in [README, *pages]:
        for line, language in fence_languages(page_text(path)):
            assert language not in SHELL_FENCES - {"bash"}, (
                f"{path.relative_to(REPO_ROOT)} line {line}: fence it as ```bash so it runs"
            )


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
    (block,) = bash_blocks(text)
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
