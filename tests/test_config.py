"""Settings: defaults < TOML file < MLSERVE_* environment < CLI flags, file discovery, errors."""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import BaseModel
from typer.testing import Result

from mlserve.cli.config_cmd import render_config_document
from mlserve.config import (
    Role,
    Settings,
    TrafficSettings,
    default_config_document,
    find_config_file,
    load_settings,
    load_settings_with_sources,
    settings_as_dict,
)
from mlserve.errors import ConfigError
from mlserve.keys import ROLES

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config.example.toml"


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def section_model(section: str) -> type[BaseModel]:
    ann = Settings.model_fields[section].annotation
    assert isinstance(ann, type) and issubclass(ann, BaseModel)
    return ann


def leaf_keys() -> list[tuple[str, str]]:
    out = []
    for section, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [(section, key) for key in ann.model_fields]
    return out


# ---------------------------------------------------------------- defaults and MLSERVE_HOME


def test_defaults_without_file_env_or_flags(home: Path) -> None:
    loaded = load_settings_with_sources()
    settings = loaded.settings
    assert loaded.config_file is None
    assert settings.server.port == 8000
    assert settings.server.host == "127.0.0.1"
    assert settings.batching.max_batch_size == 256
    assert settings.client.api_key is None
    assert set(loaded.sources.values()) == {"default", "env"}  # env: only MLSERVE_HOME
    assert loaded.sources["home"] == "env"


def test_the_batcher_built_without_settings_batches_as_the_settings_default_says() -> None:
    # Anything that builds a Batcher without the settings (an embedding, a test) gets the
    # same queueing and batch limits as `mlserve serve` with an empty config.
    from dataclasses import fields

    from mlserve.runtime.batcher import BatchingConfig

    settings = Settings().batching
    bare = BatchingConfig()
    shared = [f.name for f in fields(BatchingConfig) if hasattr(settings, f.name)]
    assert {"max_batch_size", "max_queue", "max_queue_delay_ms", "max_wait_ms"} <= set(shared)
    assert {n: getattr(bare, n) for n in shared} == {n: getattr(settings, n) for n in shared}


def test_mlserve_home_holds_registry_and_state(home: Path) -> None:
    settings = load_settings()
    assert settings.home == home
    assert settings.registry_path == home / "registry"
    assert settings.state_dir == home / "state"
    assert settings.keys_file == home / "state" / "keys.json"


def test_home_defaults_to_dot_mlserve_in_user_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSERVE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    settings = load_settings()
    assert settings.home == tmp_path / "user" / ".mlserve"
    assert settings.registry_path == tmp_path / "user" / ".mlserve" / "registry"


def test_registry_path_setting_overrides_home_default(tmp_path: Path) -> None:
    settings = load_settings(registry={"path": tmp_path / "elsewhere"})
    assert settings.registry_path == tmp_path / "elsewhere"


# ---------------------------------------------------------------- precedence, one test per boundary


def test_file_overrides_default(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "c.toml", "[server]\nport = 9001\n")
    loaded = load_settings_with_sources(cfg)
    assert loaded.settings.server.port == 9001
    assert loaded.sources["server.port"] == f"file:{cfg}"
    assert loaded.sources["server.host"] == "default"


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_toml(tmp_path / "c.toml", "[server]\nport = 9001\n")
    monkeypatch.setenv("MLSERVE_SERVER__PORT", "9002")
    loaded = load_settings_with_sources(cfg)
    assert loaded.settings.server.port == 9002
    assert loaded.sources["server.port"] == "env"


def test_flag_overrides_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_toml(tmp_path / "c.toml", "[server]\nport = 9001\n")
    monkeypatch.setenv("MLSERVE_SERVER__PORT", "9002")
    loaded = load_settings_with_sources(cfg, server={"port": 9003})
    assert loaded.settings.server.port == 9003
    assert loaded.sources["server.port"] == "flag"


def test_flag_left_as_none_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__PORT", "9002")
    assert load_settings(server={"port": None}).server.port == 9002


def test_env_home_overrides_file_home(tmp_path: Path, home: Path) -> None:
    cfg = write_toml(tmp_path / "c.toml", 'home = "/somewhere/else"\n')
    assert load_settings(cfg).home == home


def test_each_layer_contributes_its_own_keys_of_one_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_toml(tmp_path / "c.toml", '[server]\nhost = "10.1.2.3"\nport = 9001\nworkers = 3\n')
    monkeypatch.setenv("MLSERVE_SERVER__PORT", "9002")
    monkeypatch.setenv("MLSERVE_SERVER__WORKERS", "4")
    loaded = load_settings_with_sources(cfg, server={"workers": 5})
    server = loaded.settings.server
    assert (server.host, server.port, server.workers) == ("10.1.2.3", 9002, 5)
    assert server.max_batch_items == 100
    assert loaded.sources["server.host"] == f"file:{cfg}"
    assert loaded.sources["server.port"] == "env"
    assert loaded.sources["server.workers"] == "flag"
    assert loaded.sources["server.max_batch_items"] == "default"


def test_env_reads_lists_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__MODELS", '["a", "b@production"]')
    assert load_settings().server.models == ["a", "b@production"]


# ---------------------------------------------------------------- config file discovery


def test_discovery_prefers_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_toml(tmp_path / "explicit.toml", "[server]\nport = 1001\n")
    from_env = write_toml(tmp_path / "env.toml", "[server]\nport = 1002\n")
    write_toml(Path.cwd() / "mlserve.toml", "[server]\nport = 1003\n")
    monkeypatch.setenv("MLSERVE_CONFIG", str(from_env))
    loaded = load_settings_with_sources(explicit)
    assert loaded.config_file == explicit
    assert loaded.settings.server.port == 1001


def test_discovery_uses_mlserve_config_before_cwd_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_toml(tmp_path / "env.toml", "[server]\nport = 1002\n")
    write_toml(Path.cwd() / "mlserve.toml", "[server]\nport = 1003\n")
    monkeypatch.setenv("MLSERVE_CONFIG", str(from_env))
    loaded = load_settings_with_sources()
    assert loaded.config_file == from_env
    assert loaded.settings.server.port == 1002


def test_discovery_falls_back_to_mlserve_toml_in_cwd() -> None:
    local = write_toml(Path.cwd() / "mlserve.toml", "[server]\nport = 1003\n")
    loaded = load_settings_with_sources()
    assert loaded.config_file == local
    assert loaded.settings.server.port == 1003


def test_discovery_finds_nothing_without_any_file() -> None:
    assert find_config_file() is None


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_missing_mlserve_config_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml does not exist"):
        load_settings()


# ---------------------------------------------------------------- relative paths


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    cfg = write_toml(
        tmp_path / "conf" / "mlserve.toml",
        'home = "state-home"\n[registry]\npath = "models/reg"\n[auth]\nkeys_file = "keys.json"\n',
    )
    settings = load_settings(cfg)  # cwd is elsewhere (the isolated cwd)
    assert Path.cwd() != cfg.parent
    assert settings.registry_path == tmp_path / "conf" / "models" / "reg"
    assert settings.keys_file == tmp_path / "conf" / "keys.json"


def test_relative_home_in_config_file_resolves_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSERVE_HOME")
    cfg = write_toml(tmp_path / "conf" / "c.toml", 'home = "state-home"\n')
    settings = load_settings(cfg)
    assert settings.home == tmp_path / "conf" / "state-home"
    assert settings.registry_path == tmp_path / "conf" / "state-home" / "registry"


def test_absolute_and_home_relative_paths_in_config_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    cfg = write_toml(
        tmp_path / "conf" / "c.toml",
        f'[registry]\npath = "{tmp_path / "abs"}"\n[auth]\nkeys_file = "~/k.json"\n',
    )
    settings = load_settings(cfg)
    assert settings.registry_path == tmp_path / "abs"
    assert settings.keys_file == tmp_path / "user" / "k.json"


def test_relative_config_path_in_cwd_resolves_against_cwd() -> None:
    write_toml(Path.cwd() / "mlserve.toml", '[registry]\npath = "reg"\n')
    assert load_settings().registry_path == Path.cwd() / "reg"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[server]\nprot = 9000\n", ["unknown setting 'server.prot'"]),
        ("colour = 'red'\n", ["unknown setting 'colour'"]),
        ("[sever]\nport = 9000\n", ["unknown setting 'sever'"]),
        ('[server]\nport = "high"\n', ["invalid setting 'server.port'", "integer"]),
        ("[server]\nport = 70000\n", ["invalid setting 'server.port'", "65535"]),
        ('[logging]\nlevel = "loud"\n', ["invalid setting 'logging.level'"]),
        ("server = 5\n", ["invalid setting 'server'"]),
        ("[registry]\npath = 3\n", ["invalid setting 'registry.path'"]),
        ("[server\nport = 1\n", ["is not valid TOML", "line 1"]),
        ("port = = 1\n", ["is not valid TOML"]),
    ],
    ids=[
        "unknown-key",
        "unknown-top-level-key",
        "unknown-section",
        "wrong-type",
        "out-of-range",
        "bad-choice",
        "section-not-a-table",
        "path-not-a-string",
        "unclosed-table",
        "bad-syntax",
    ],
)
def test_bad_config_file_is_a_config_error_naming_key_and_file(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    cfg = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = info.value.message
    assert str(cfg) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "binary.toml"
    cfg.write_bytes(b"\xff\xfe\x00port = 1")
    with pytest.raises(ConfigError, match=r"binary\.toml is not UTF-8"):
        load_settings(cfg)


def test_unreadable_config_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_toml(tmp_path / "locked.toml", "[server]\nport = 1\n")
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        # chmod 000 does not stop root (tests may run as root): refuse like the OS would.
        if self == cfg:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(ConfigError, match=r"locked\.toml is not readable \(permission denied\)"):
        load_settings(cfg)


def test_config_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)


def test_bad_env_value_is_a_config_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"invalid setting 'server\.port'.*environment"):
        load_settings()


def test_unknown_env_key_in_a_section_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__PROT", "9000")
    with pytest.raises(ConfigError, match=r"unknown setting 'server\.prot'"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLSERVE_SERVER__CORS_ORIGINS", "not json"),
        ("MLSERVE_TRAFFIC__SPLITS", "{sentiment: 1}"),
        ("MLSERVE_SERVER", "port=1"),
    ],
)
def test_env_list_or_table_that_is_not_json_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(
        ConfigError, match=rf"^invalid environment variable {variable}: not valid JSON"
    ):
        load_settings()


def test_env_json_that_is_not_json_exits_2_naming_the_variable(
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    monkeypatch.setenv("MLSERVE_SERVER__CORS_ORIGINS", "not json")
    result = cli("config", "show")
    assert_user_error(result, "MLSERVE_SERVER__CORS_ORIGINS", "not valid JSON")
    assert result.stdout == ""


def test_rate_limit_roles_accepts_the_real_roles(tmp_path: Path) -> None:
    cfg = write_toml(
        tmp_path / "roles.toml",
        "[rate_limit.roles]\nadmin = {rate = 5, burst = 10}\npredict = {rate = 1, burst = 2}\n",
    )
    roles = load_settings(cfg).rate_limit.roles
    assert set(roles) == {"admin", "predict"}
    assert roles["admin"].burst == 10


def test_misspelled_rate_limit_role_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "typo.toml", "[rate_limit.roles]\nadmn = {rate = 5, burst = 10}\n")
    with pytest.raises(ConfigError, match=r"invalid key 'rate_limit\.roles\.admn'.*typo\.toml"):
        load_settings(cfg)


def test_misspelled_rate_limit_role_in_the_env_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSERVE_RATE_LIMIT__ROLES", '{"predictor": {"rate": 1, "burst": 1}}')
    with pytest.raises(ConfigError, match=r"invalid key 'rate_limit\.roles\.predictor'"):
        load_settings()


def test_setting_roles_are_the_key_roles() -> None:
    assert typing.get_args(Role) == ROLES


def test_bad_flag_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid setting 'server\.workers'"):
        load_settings(server={"workers": 0})


# ---------------------------------------------------------------- secrets and documentation


def test_secrets_are_masked_in_the_dict_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVE_CLIENT__API_KEY", "s3cr3t-value")
    settings = load_settings()
    assert settings.client.api_key is not None
    assert settings.client.api_key.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert settings_as_dict(settings)["client"]["api_key"] == "********"
    assert settings_as_dict(settings, mask_secrets=False)["client"]["api_key"] == "s3cr3t-value"


def test_every_setting_has_a_description() -> None:
    undocumented = [
        f"{section}.{key}"
        for section, key in leaf_keys()
        if not section_model(section).model_fields[key].description
    ]
    assert undocumented == []
    assert Settings.model_fields["home"].description


def test_default_config_document_round_trips_to_the_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "defaults.toml"
    cfg.write_text(tomli_w.dumps(default_config_document()), encoding="utf-8")
    assert load_settings(cfg) == load_settings()


def test_rendered_config_document_parses_and_documents_every_key() -> None:
    text = render_config_document()
    parsed = tomllib.loads(text)
    assert set(parsed) == {s for s, _ in leaf_keys()}
    comment_above: dict[str, str] = {}
    section = ""
    previous = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key = line.removeprefix("# ").split(" = ", 1)[0]
            if section and " = " in line and key.isidentifier():
                comment_above[f"{section}.{key}"] = previous
        previous = line
    for section, key in leaf_keys():
        above = comment_above.get(f"{section}.{key}")
        assert above is not None, f"{section}.{key} is not in the document"
        assert above.startswith("# ") and " = " not in above, f"{section}.{key} has no comment"


@pytest.mark.parametrize("key", ["splits", "shadow"])
def test_traffic_examples_in_the_docs_are_toml_that_loads(tmp_path: Path, key: str) -> None:
    description = TrafficSettings.model_fields[key].description or ""
    example = description.split("e.g. ", 1)[1].removesuffix(".")
    settings = load_settings(write_toml(tmp_path / "traffic.toml", f"[traffic]\n{example}\n"))
    assert getattr(settings.traffic, key)["sentiment"]


def test_example_config_loads_to_the_defaults() -> None:
    assert EXAMPLE.is_file(), "config.example.toml is missing at the repo root"
    loaded = load_settings_with_sources(EXAMPLE)
    assert loaded.settings == load_settings()
    assert loaded.settings.model_dump() == Settings().model_dump()


def test_example_config_matches_what_config_init_writes() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == render_config_document(), (
        "config.example.toml is stale: regenerate it with "
        "`mlserve config init config.example.toml --force`"
    )
