"""`mlserve serve` on a port it cannot listen on: one clear line and exit 2, before the banner
and before anything is loaded or trained."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        env["MLSERVE_HOME"] = str(tmp_path / "home")
        done = subprocess.run(
            [sys.executable, "-m", "mlserve", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: cannot listen on 127.0.0.1 port {port}: the port is in use "
                     "(choose another with --port or server.port)"]  # fmt: skip
    assert "serving" not in done.stdout + done.stderr
    # Nothing was trained into the empty registry before the bind failed.
    assert not (tmp_path / "home" / "registry").exists() or not any(
        (tmp_path / "home" / "registry").iterdir()
    )
