"""`mlserve config init | show`, and how every command reports bad settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from mlserve.cli.config_cmd import render_config_document
from mlserve.config import load_settings

SECRET = "sk-live-do-not-print-me"


def test_config_init_writes_a_documented_starter_file(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    target = tmp_path / "conf" / "mlserve.toml"
    result = cli("config", "init", target)
    assert result.exit_code == 0, result.stderr
    assert target.read_text(encoding="utf-8") == render_config_document()
    assert load_settings(target) == load_settings()


def test_config_init_defaults_to_mlserve_toml_in_cwd(cli: Callable[..., Result]) -> None:
    result = cli("config", "init")
    assert result.exit_code == 0, result.stderr
    written = Path.cwd() / "mlserve.toml"
    assert written.is_file()
    assert load_settings().model_dump() == load_settings(written).model_dump()


def test_config_init_refuses_to_overwrite_without_force(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    target = tmp_path / "mlserve.toml"
    target.write_text("# my precious settings\n")
    result = cli("config", "init", target)
    assert_user_error(result, str(target), "already exists", "--force")
    assert target.read_text() == "# my precious settings\n"


def test_config_init_overwrites_with_force(cli: Callable[..., Result], tmp_path: Path) -> None:
    target = tmp_path / "mlserve.toml"
    target.write_text("# old\n")
    result = cli("config", "init", target, "--force")
    assert result.exit_code == 0, result.stderr
    assert target.read_text(encoding="utf-8") == render_config_document()


def test_config_show_json_masks_secrets_and_reports_sources(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nport = 9100\n")
    monkeypatch.setenv("MLSERVE_CLIENT__API_KEY", SECRET)
    monkeypatch.setenv("MLSERVE_BATCHING__MAX_BATCH_SIZE", "8")

    result = cli("config", "show", "--json", "--config", cfg)
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout
    data = json.loads(result.stdout)
    assert data["config_file"] == str(cfg)
    assert data["settings"]["client"]["api_key"] == "********"
    assert data["settings"]["server"]["port"] == 9100
    assert data["settings"]["batching"]["max_batch_size"] == 8
    assert data["sources"]["client.api_key"] == "env"
    assert data["sources"]["batching.max_batch_size"] == "env"
    assert data["sources"]["server.port"] == f"file:{cfg}"
    assert data["sources"]["server.host"] == "default"
    assert data["sources"]["home"] == "env"


def test_config_show_table_masks_secrets(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_CLIENT__API_KEY", SECRET)
    result = cli("config", "show")
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout
    assert "client.api_key" in result.stdout
    assert "********" in result.stdout


def test_config_show_finds_the_file_named_by_mlserve_config(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "from-env.toml"
    cfg.write_text('[logging]\nlevel = "debug"\n')
    monkeypatch.setenv("MLSERVE_CONFIG", str(cfg))
    data = json.loads(cli("config", "show", "--json").stdout)
    assert data["config_file"] == str(cfg)
    assert data["settings"]["logging"]["level"] == "debug"


def test_config_show_without_any_file(cli: Callable[..., Result]) -> None:
    data = json.loads(cli("config", "show", "--json").stdout)
    assert data["config_file"] is None
    assert data["settings"] == json.loads(json.dumps(load_settings().model_dump(mode="json")))


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"[server]\nprot = 1\n", ["unknown setting 'server.prot'"]),
        (b'[server]\nport = "high"\n', ["invalid setting 'server.port'"]),
        (b"[server\n", ["not valid TOML"]),
        (b"\xff\xfe[server]", ["not UTF-8"]),
    ],
    ids=["unknown-key", "wrong-type", "invalid-toml", "not-utf8"],
)
@pytest.mark.parametrize(
    "command",
    [("config", "show"), ("models", "list"), ("train", "--sample", "iris")],
    ids=["config-show", "models-list", "train"],
)
def test_bad_config_file_exits_2_with_one_line_naming_it(
    cli: Callable[..., Result],
    tmp_path: Path,
    assert_user_error: Callable[..., None],
    content: bytes,
    fragments: list[str],
    command: tuple[str, ...],
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(content)
    result = cli(*command, "--config", cfg)
    assert_user_error(result, str(cfg), *fragments)
    assert result.stdout == ""


def test_missing_config_file_exits_2(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    result = cli("config", "show", "--config", tmp_path / "nope.toml")
    assert_user_error(result, "nope.toml", "does not exist")


def test_bad_environment_value_exits_2(
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__WORKERS", "many")
    result = cli("models", "list")
    assert_user_error(result, "server.workers", "environment")


def test_verbose_adds_the_traceback(cli: Callable[..., Result], tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nprot = 1\n")
    result = cli("--verbose", "config", "show", "--config", cfg)
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert "unknown setting 'server.prot'" in result.stderr


def test_config_init_into_an_unwritable_place_exits_2(
    cli: Callable[..., Result], tmp_path: Path, assert_user_error: Callable[..., None]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_user_error(cli("config", "init", blocker / "mlserve.toml"), "cannot write")
