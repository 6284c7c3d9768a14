"""Command tests: one real `mlserve serve` for every command module that talks to a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.data import populate
from support.net import silent_port
from support.servers import MlserveProcess, running


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    """A healthy `mlserve serve` over sentiment (text, pos/neg) and iris (tabular), both
    @production, no default model; shared by the command modules (one start per test worker).
    Tests must not change its registry; they count its metrics as differences."""
    root = tmp_path_factory.mktemp("cli-server")
    populate(root / "registry")
    with running(root / "registry", root / "home") as started:
        yield started


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose port accepts connections (the kernel completes them) but never answers."""
    with silent_port() as port:
        yield f"http://127.0.0.1:{port}"
