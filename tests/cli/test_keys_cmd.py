"""`mlserve keys`: create prints a key once, list never shows keys or full hashes, revoke, hash."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mlserve.keys import KeyStore, hash_key


@pytest.fixture
def keys_file(home: Path) -> Path:
    return home / "state" / "keys.json"


def test_create_prints_the_key_once_on_stdout(cli: Callable[..., Result], keys_file: Path) -> None:
    result = cli("keys", "create", "--role", "predict", "--name", "ci", "--expires", "30d")
    assert result.exit_code == 0, result.stderr
    key = result.stdout.strip()
    assert result.stdout == key + "\n"  # just the key: KEY=$(mlserve keys create ...) works
    assert key.startswith("mls_")
    assert "will not be shown again" in result.stderr
    assert key not in result.stderr
    (record,) = KeyStore(keys_file).list()
    assert (record.name, record.role, record.sha256) == ("ci", "predict", hash_key(key))
    assert record.expires_at is not None
    assert key not in keys_file.read_text()


def test_create_json(cli: Callable[..., Result], keys_file: Path) -> None:
    result = cli("keys", "create", "--role", "admin", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["role"] == "admin" and data["status"] == "active"
    assert data["name"].startswith("admin-")
    assert data["expires_at"] is None
    assert hash_key(data["key"]) == KeyStore(keys_file).list()[0].sha256
    assert "sha256" not in data


def test_create_honours_the_keys_file_setting(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "elsewhere" / "api-keys.json"
    monkeypatch.setenv("MLSERVE_AUTH__KEYS_FILE", str(target))
    assert cli("keys", "create", "--role", "predict").exit_code == 0
    assert len(KeyStore(target).list()) == 1


def test_create_refuses_a_duplicate_active_name(
    cli: Callable[..., Result], assert_user_error: Callable[..., None]
) -> None:
    assert cli("keys", "create", "--role", "predict", "--name", "ci").exit_code == 0
    result = cli("keys", "create", "--role", "predict", "--name", "ci")
    assert_user_error(result, "already exists", "mlserve keys revoke ci")


def test_create_refuses_bad_expiry_and_role(
    cli: Callable[..., Result], assert_user_error: Callable[..., None], keys_file: Path
) -> None:
    assert_user_error(cli("keys", "create", "--role", "predict", "--expires", "soon"), "soon")
    assert_user_error(
        cli("keys", "create", "--role", "predict", "--expires", "2000-01-01"), "already passed"
    )
    result = cli("keys", "create", "--role", "root")
    assert result.exit_code == 2  # click's usage error names the choices
    assert "predict" in result.stderr and "admin" in result.stderr
    assert not keys_file.exists()


def test_list_shows_names_roles_and_status_never_keys_or_hashes(
    cli: Callable[..., Result], keys_file: Path
) -> None:
    store = KeyStore(keys_file)
    ci = store.create(role="predict", name="ci")
    ops = store.create(role="admin", name="ops")
    store.revoke("ci")
    result = cli("keys", "list")
    assert result.exit_code == 0, result.stderr
    for text in ("ci", "ops", "predict", "admin", "revoked", "active"):
        assert text in result.stdout
    for secret in (ci.key, ops.key, ci.record.sha256, ops.record.sha256):
        # Neither the key, nor its hash, nor a prefix of the hash (which narrows a search).
        assert secret[:8] not in result.stdout + result.stderr

    data = json.loads(cli("keys", "list", "--json").stdout)
    assert [(k["name"], k["role"], k["status"]) for k in data] == [
        ("ci", "predict", "revoked"),
        ("ops", "admin", "active"),
    ]
    listed = json.dumps(data)
    for secret in (ci.key, ops.key, ci.record.sha256, ops.record.sha256):
        assert secret[:8] not in listed


def test_list_includes_keys_from_settings(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = {"name": "deploy", "role": "admin", "sha256": hash_key("mls_x")}
    monkeypatch.setenv("MLSERVE_AUTH__KEYS", json.dumps([entry]))
    data = json.loads(cli("keys", "list", "--json").stdout)
    assert [(k["name"], k["source"], k["status"]) for k in data] == [
        ("deploy", "settings", "active")
    ]


def test_list_without_keys_says_auth_is_off(cli: Callable[..., Result]) -> None:
    result = cli("keys", "list")
    assert result.exit_code == 0
    assert "auth is off" in result.stderr
    assert json.loads(cli("keys", "list", "--json").stdout) == []


def test_revoke(cli: Callable[..., Result], keys_file: Path) -> None:
    KeyStore(keys_file).create(role="predict", name="ci")
    result = cli("keys", "revoke", "ci")
    assert result.exit_code == 0, result.stderr
    assert "revoked key 'ci'" in result.stderr
    assert KeyStore(keys_file).list()[0].status() == "revoked"


def test_revoke_unknown_or_settings_keys_fails(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_user_error(cli("keys", "revoke", "ghost"), "no key named 'ghost'", code=1)
    entry = {"name": "deploy", "role": "admin", "sha256": hash_key("mls_x")}
    monkeypatch.setenv("MLSERVE_AUTH__KEYS", json.dumps([entry]))
    assert_user_error(cli("keys", "revoke", "deploy"), "auth.keys")


def test_hash_reads_a_key_from_stdin(runner: CliRunner) -> None:
    from mlserve.cli import app

    result = runner.invoke(app, ["keys", "hash"], input="mls_secret-value\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == hash_key("mls_secret-value") + "\n"
    assert "mls_secret-value" not in result.stdout + result.stderr


def test_hash_without_input_is_a_usage_error(
    runner: CliRunner, assert_user_error: Callable[..., None]
) -> None:
    from mlserve.cli import app

    assert_user_error(runner.invoke(app, ["keys", "hash"], input=""), "no key on stdin")


def test_hash_matches_what_the_settings_accept(
    runner: CliRunner,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    keys_file: Path,
) -> None:
    from mlserve.cli import app

    key = cli("keys", "create", "--role", "predict").stdout.strip()
    digest = runner.invoke(app, ["keys", "hash"], input=key).stdout.strip()
    entry = {"name": "from-hash", "role": "predict", "sha256": digest}
    monkeypatch.setenv("MLSERVE_AUTH__KEYS", json.dumps([entry]))
    data = json.loads(cli("keys", "list", "--json").stdout)
    assert [(k["source"], k["status"]) for k in data] == [
        ("file", "active"),
        ("settings", "active"),
    ]
    # The hash printed is the one the key file stored for the key it was created with.
    (stored,) = KeyStore(keys_file).list()
    assert stored.sha256 == digest


def test_keys_commands_do_not_import_the_server() -> None:
    probe = (
        "import sys; from mlserve.cli import main; sys.argv = ['mlserve', 'keys', 'list'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'sklearn', 'uvicorn'}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


def test_keys_help_lists_the_commands(cli: Callable[..., Result]) -> None:
    result = cli("keys", "--help")
    assert result.exit_code == 0
    for command in ("create", "list", "revoke", "hash"):
        assert command in result.stdout
    assert "keys" in cli("--help").stdout
