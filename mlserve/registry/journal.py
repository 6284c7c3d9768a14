"""Aliases and version numbers on disk: aliases.json, the alias intent a new version is
published with, and the never-decreasing version counter.

A version asked to carry aliases is published with an `aliases.intent` inside its folder, so
the one rename that makes the version visible makes its aliases visible too: readers merge a
published intent into aliases.json, and every writer (under the registry lock) first settles
whatever intent a killed writer left (writes it into aliases.json, removes it). `.highest`
holds the highest number ever handed out; it is written before the version is published and
never lowered, so a number is never given to two artifacts, even after a delete."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from mlserve.fsutil import atomic_write_json, fsync_dir, write_synced
from mlserve.registry.problems import corrupt, problem_of, unreadable
from mlserve.registry.refs import ALIAS_RE

__all__ = [
    "ALIASES",
    "ARTIFACT",
    "HIGHEST",
    "INTENT",
    "METADATA",
    "highest_ever",
    "read_aliases",
    "read_stored_aliases",
    "reserve_number",
    "settle",
    "write_intent",
]

log = logging.getLogger("mlserve.registry")

ARTIFACT = "model.joblib"
METADATA = "metadata.json"
ALIASES = "aliases.json"
INTENT = "aliases.intent"
HIGHEST = ".highest"


def _parse_aliases(root: Path, path: Path, raw: bytes) -> dict[str, int]:
    try:
        data = json.loads(raw.decode())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise corrupt(root, path, problem_of(exc)) from None
    if not isinstance(data, dict):
        raise corrupt(root, path, "not a JSON object of alias names to version numbers")
    out: dict[str, int] = {}
    for alias, version in data.items():
        if not ALIAS_RE.match(alias):
            raise corrupt(root, path, "holds an invalid alias name")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise corrupt(root, path, f"alias '{alias}' does not name a version number")
        out[alias] = version
    return out


def read_stored_aliases(root: Path, model_dir: Path) -> dict[str, int]:
    """What aliases.json holds ({} without one)."""
    path = model_dir / ALIASES
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise unreadable(root, path, exc) from None
    return _parse_aliases(root, path, raw)


def _pending(root: Path, model_dir: Path) -> list[tuple[int, list[str], Path]]:
    """(version, aliases, intent file) of every published version with an intent, oldest
    first (a later version's intent wins a shared alias)."""
    vdir = model_dir / "versions"
    try:
        folders = [p for p in vdir.iterdir() if p.name.isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise unreadable(root, vdir, exc) from None
    out = []
    for folder in sorted(folders, key=lambda p: int(p.name)):
        path = folder / INTENT
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise unreadable(root, path, exc) from None
        if not (folder / METADATA).is_file():
            continue  # not a published version (a partial copy): nothing to apply
        try:
            data = json.loads(raw.decode())
            aliases = data["aliases"]
            if not all(isinstance(a, str) and ALIAS_RE.match(a) for a in aliases):
                raise ValueError("not alias names")
        except (ValueError, TypeError, KeyError) as exc:
            raise corrupt(root, path, problem_of(exc)) from None
        out.append((int(folder.name), list(aliases), path))
    return out


def read_aliases(root: Path, model_dir: Path) -> dict[str, int]:
    """The aliases of a model: aliases.json with the intents of published versions applied
    (a version is visible with its aliases at once, even if its writer died before writing
    aliases.json). aliases.json is read first: a writer settling meanwhile is seen either
    before or after, never half."""
    aliases = read_stored_aliases(root, model_dir)
    for version, names, _ in _pending(root, model_dir):
        aliases.update(dict.fromkeys(names, version))
    return aliases


def write_intent(folder: Path, aliases: Sequence[str]) -> None:
    """Record in a staged version folder the aliases it is published with (fsynced; the
    caller fsyncs the folder before the publishing rename)."""
    write_synced(folder / INTENT, json.dumps({"aliases": sorted(set(aliases))}).encode())


def settle(root: Path, model_dir: Path) -> None:
    """Write the intents of published versions into aliases.json, then remove them, and
    remove the temp files of atomic writes a killed writer left. Only under the registry
    lock. An OSError writing aliases.json propagates (nothing has changed then); after
    that, the intent is already applied, so failing to remove it changes nothing anyone sees
    (the next writer removes it)."""
    pending = _pending(root, model_dir)
    if pending:
        aliases = read_aliases(root, model_dir)
        atomic_write_json(model_dir / ALIASES, aliases)
        with contextlib.suppress(OSError):
            for _, _, path in pending:
                path.unlink()
                fsync_dir(path.parent)
        log.debug("settled the aliases of %s: %s", model_dir.name, aliases)
    with contextlib.suppress(OSError):
        # Temp files of atomic_write_json (".aliases.json.<random>.tmp"): nobody else
        # writes here while the lock is held.
        for leftover in model_dir.glob(".*.tmp"):
            leftover.unlink()


def highest_ever(model_dir: Path) -> int:
    """The highest version number ever handed out for the model (0: none recorded)."""
    try:
        return int((model_dir / HIGHEST).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def reserve_number(model_dir: Path, version: int) -> None:
    """Record `version` as handed out (durably; never lowers the counter)."""
    if version > highest_ever(model_dir):
        atomic_write_json(model_dir / HIGHEST, version)
