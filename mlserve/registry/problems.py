"""Registry files that cannot be read, reported in one line: the file and its problem, never its
contents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlserve.errors import RegistryError

__all__ = ["RegistryCorruptError", "corrupt", "problem_of", "unreadable"]

_MAX_PROBLEM = 160  # characters of a parser's own words kept in the message


class RegistryCorruptError(RegistryError):
    """A registry file (a version's metadata.json, a model's aliases.json) cannot be parsed.

    A 500: the fault is in the server's own files and stays until someone repairs them, so a
    retry cannot help (a 503 would invite one); the message names the file relative to the
    registry, so it survives the path redaction of server answers."""

    code = "registry_corrupt"


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def corrupt(root: Path, path: Path, problem: str) -> RegistryCorruptError:
    """The one-line error of a registry file that cannot be parsed."""
    shown = _shown(root, path)
    return RegistryCorruptError(
        f"registry file {shown} is corrupt: {problem}", details={"file": shown}
    )


def unreadable(root: Path, path: Path, exc: OSError) -> RegistryError:
    """The one-line error of a registry file that cannot be read at all (permissions, I/O)."""
    return RegistryError(f"cannot read registry file {_shown(root, path)}: {exc.strerror or exc}")


def _clip(text: str) -> str:
    text = " ".join(text.split())  # one line, whatever the parser said
    return text if len(text) <= _MAX_PROBLEM else text[: _MAX_PROBLEM - 1] + "…"


def problem_of(exc: Exception) -> str:
    """What is wrong, in a few words and without the offending input (a pydantic message
    embeds the input value; a file may hold anything)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return _clip(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    if isinstance(exc, ValidationError):
        errors: list[Any] = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            return _clip(f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})")
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _clip(f"{where + ': ' if where else ''}{first['msg']}{more}")
    return _clip(f"{type(exc).__name__}")
