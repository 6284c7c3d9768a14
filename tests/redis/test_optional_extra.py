"""The mlserve[redis] extra is optional: nothing imports redis or Celery unless redis.url is set,
and setting it without the extra is a clear configuration error (exit 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support.probe import imported
from support.servers import process_env
from typer.testing import Result

OPTIONAL = ("redis", "celery", "kombu")

# Runs the CLI as if the extra were not installed: importing redis or celery fails.
WITHOUT_EXTRA = textwrap.dedent(
    """
    import sys
    for name in ("redis", "celery"):
        sys.modules[name] = None  # `import redis` now raises ImportError
    sys.argv = ["mlserve", *sys.argv[1:]]
    import mlserve.cli
    mlserve.cli.main()
    """
)


@pytest.mark.parametrize(
    "args",
    [(), ("--help",), ("worker", "--help"), ("serve", "--help"), ("keys", "--help")],
    ids=lambda a: " ".join(a) or "import-only",
)
def test_the_cli_does_not_import_redis_or_celery(args: tuple[str, ...]) -> None:
    loaded, code = imported(OPTIONAL, *args)
    assert loaded == ""
    assert code == "0"


def test_an_app_without_redis_url_does_not_import_them(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from mlserve.config import load_settings
        from mlserve.server.app import create_app
        create_app(load_settings(None, home=sys.argv[1]))
        print(sorted({m.split(".")[0] for m in sys.modules} & {"redis", "celery", "kombu"}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_redis_url_without_the_extra_names_the_extra_to_install(
    command: str, tmp_path: Path
) -> None:
    env = {"MLSERVE_REDIS__URL": "redis://127.0.0.1:6379/0"}
    args = [command, "--no-sample"] if command == "serve" else [command]
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(tmp_path, **env),
    )
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: redis.url is set, but the redis package is not installed")
    assert "pip install 'mlserve-sklearn[redis]'" in message
    assert "Traceback" not in proc.stderr


def test_worker_without_redis_url_is_a_config_error(
    cli: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    assert_user_error(cli("worker"), "mlserve worker needs Redis", "MLSERVE_REDIS__URL")
