"""Finding and reading the TOML config file (mlserve.config builds the settings from it)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from mlserve.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_NAME", "find_config_file", "read_toml"]

DEFAULT_CONFIG_NAME = "mlserve.toml"


def find_config_file(path: Path | str | None = None) -> Path | None:
    """--config PATH, else $MLSERVE_CONFIG, else ./mlserve.toml when present."""
    if path is not None:
        return Path(path)
    env = os.environ.get("MLSERVE_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return data
