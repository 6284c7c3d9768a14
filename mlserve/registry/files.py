"""FileModels: model files served as they are, without a registry directory (serve --model-path)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlserve.config import Settings, split_model_path
from mlserve.errors import (
    MlserveError,
    ModelNotFoundError,
    ReadOnlyModelsError,
    UsageError,
)
from mlserve.registry.artifacts import LoadedArtifact, version_mismatch_warnings
from mlserve.registry.preloaded import PRELOADED
from mlserve.registry.refs import ModelRef, validate_name
from mlserve.registry.store import ARTIFACT, Registry, describe_version
from mlserve.schemas import ModelMetadata

__all__ = ["FILES_ALIAS", "FileModels", "ReadOnlyModelsError", "open_models"]

log = logging.getLogger("mlserve.registry")

FILES_ALIAS = "production"
"""The alias every served file has (its only version is 1)."""

# What smoke_check tells `register` users; serve has no --no-check, so it is left out.
_NO_CHECK_HINT = re.compile(r"(?:; fix the model or the example, or|;) pass --no-check\b.*$")


@dataclass(slots=True)
class _Entry:
    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    meta: ModelMetadata | None = None
    estimator: Any = None
    error: MlserveError | None = None  # a file that could not be read stays refused


def _default_name(path: Path) -> str:
    """The file's stem (iris.joblib: iris), or an MLflow directory's name."""
    full = Path(os.path.abspath(path))  # not resolve(): a symlinked file keeps its own name
    return full.name if full.is_dir() else full.stem


class FileModels(Registry):
    """The registry API over model files (joblib, skops, ONNX) and MLflow directories, read
    only and in memory: each is read by its format, described and smoke-checked exactly as
    `mlserve register` does (Intake.register), on first use, and served as version 1 with the
    alias `production`. Nothing is ever written, no directory created: alias and version
    changes raise ReadOnlyModelsError (409); reload, V2 load and unload work in memory.

    A subclass of Registry, so the serving layer (ModelManager, AppState, routes), typed
    against Registry, takes it unchanged; every writing path of Registry goes through
    _commit, _locked or _ensure_root, which refuse here. `root` is the folder holding the
    files: what error messages shown to clients leave out."""

    def __init__(
        self, entries: Sequence[tuple[str | None, Path | str]], *, trust: Sequence[str] = ()
    ) -> None:
        if not entries:
            raise UsageError("no model files to serve")
        self._entries: dict[str, _Entry] = {}
        for given, raw in entries:
            path = Path(raw).expanduser()
            if not str(raw).strip():
                raise UsageError("a model path is empty" + (f" ('{given}=')" if given else ""))
            name = given if given is not None else _default_name(path)
            try:
                validate_name(name)
            except MlserveError as exc:
                hint = "" if given is not None else "; name it with --model-path NAME=PATH"
                raise type(exc)(f"{path}: {exc.message}{hint}") from None
            if name in self._entries:
                raise UsageError(
                    f"two model files are named '{name}' ({self._entries[name].path} and "
                    f"{path}): name them with --model-path NAME=PATH"
                )
            self._entries[name] = _Entry(path=path)
        folders = [os.path.dirname(os.path.abspath(e.path)) for e in self._entries.values()]
        super().__init__(os.path.commonpath(folders))
        self._trust = list(trust)  # types a .skops file may hold beyond the safe ones
        self._reading = threading.local()  # .name: the file this thread reads (_commit takes it)

    @classmethod
    def from_settings(cls, settings: Settings) -> FileModels:
        return cls(
            [split_model_path(entry) for entry in settings.server.model_paths],
            trust=settings.server.trusted_types,
        )

    def check(self) -> list[ModelMetadata]:
        """Read every file now (what `serve` does before its server listens): the first one
        that cannot serve raises its one-line error."""
        return [self._read(name) for name in self._entries]

    # ----------------------------------------------------------------- reading the files
    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(validate_name(name))
        if entry is None:
            serving = ", ".join(self._entries)
            raise ModelNotFoundError(f"model '{name}' is not served here (model files: {serving})")
        return entry

    def _read(self, name: str) -> ModelMetadata:
        entry = self._entry(name)
        with entry.lock:  # one read per file, however many threads ask at once
            if entry.meta is not None:
                return entry.meta
            if entry.error is not None:
                raise entry.error
            kept = PRELOADED.take(("file", str(entry.path), name))
            if kept is not None:  # read (and checked) by the process this one was forked from
                entry.meta, entry.estimator = kept
                return kept[0]  # type: ignore[no-any-return]
            try:
                with self._taking(name):
                    self.register(entry.path, name=name, aliases=[FILES_ALIAS], trust=self._trust)
            except MlserveError as exc:
                message = _NO_CHECK_HINT.sub("", exc.message)
                if str(entry.path) not in message:
                    message = f"{entry.path}: {message}"
                entry.error = type(exc)(message)
                raise entry.error from None
            assert entry.meta is not None  # noqa: S101 - set by _commit, under this lock
            log.info("read %s from %s (sha256 %s)", name, entry.path, entry.meta.sha256[:12])
            return entry.meta

    @contextlib.contextmanager
    def _taking(self, name: str) -> Iterator[None]:
        self._reading.name = name
        try:
            yield
        finally:
            self._reading.name = None

    def _commit(
        self,
        data: bytes,
        estimator: Any,
        *,
        name: str,
        aliases: Sequence[str],
        artifact: str = ARTIFACT,
        **fields: Any,
    ) -> ModelMetadata:
        """Where Registry publishes a version: here the file's metadata is kept in memory
        (the bytes are only hashed), and only while that file is being read."""
        if name != getattr(self._reading, "name", None):
            raise self._read_only("no model can be registered here")
        draft = describe_version(data, estimator, name=name, artifact=artifact, **fields)
        meta = ModelMetadata(version=1, **draft)
        entry = self._entries[name]
        entry.meta, entry.estimator = meta, estimator
        return meta

    def preload(self, meta: ModelMetadata) -> None:
        """Read the file now and keep it for the processes this one forks (Registry.preload)."""
        own = self._read(meta.name)
        entry = self._entry(meta.name)
        PRELOADED.keep(("file", str(entry.path), meta.name), (own, entry.estimator))

    # ----------------------------------------------------------------- the read API
    def check_readable(self) -> None:
        return None  # no directory: the files are read (and their errors raised) on first use

    def names(self) -> list[str]:
        return sorted(self._entries)

    def versions(self, name: str) -> list[int]:
        self._entry(name)
        return [1]

    def aliases(self, name: str) -> dict[str, int]:
        return {FILES_ALIAS: 1} if validate_name(name) in self._entries else {}

    def metadata(self, name: str, version: int) -> ModelMetadata:
        meta = self._read(name)
        if version != meta.version:
            raise ModelNotFoundError(f"model '{name}' has no version {version} (versions: 1)")
        return meta

    def state_token(self) -> str:
        """Constant: files are read once, nothing here changes while serving."""
        return "files:" + ",".join(self._entries)

    def path_of(self, name: str) -> Path:
        """The file (or MLflow directory) `name` is read from."""
        return self._entry(name).path

    def artifact_path(self, meta: ModelMetadata) -> Path:
        """The file whose bytes the version's sha256 is of (what an export bundles)."""
        path = self.path_of(meta.name)
        if path.is_dir():
            raise self._read_only(
                f"'{meta.name}' is an MLflow directory, not one artifact file to export"
            )
        return path

    def load(
        self, ref: ModelRef | str | ModelMetadata, *, default_alias: str = "production"
    ) -> LoadedArtifact:
        """The estimator read (and smoke-checked) from the file: no second read."""
        meta = (
            ref
            if isinstance(ref, ModelMetadata)
            else self.resolve(ref, default_alias=default_alias)
        )
        own = self.metadata(meta.name, meta.version)
        notes = version_mismatch_warnings(own)
        for note in notes:
            log.warning("%s", note)
        return LoadedArtifact(
            estimator=self._entries[own.name].estimator, metadata=own, warnings=notes
        )

    # ----------------------------------------------------------------- no writing
    def _read_only(self, what: str) -> ReadOnlyModelsError:
        return ReadOnlyModelsError(
            f"this server serves model files (--model-path), not a registry: {what}; "
            "register them (mlserve register) and serve the registry to manage versions "
            "and aliases"
        )

    def _ensure_root(self) -> None:
        raise self._read_only("nothing can be written")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        raise self._read_only("nothing can be written")
        yield  # pragma: no cover - a generator, for contextmanager

    def set_alias(self, name: str, alias: str, version: int) -> None:
        raise self._read_only("aliases cannot be changed")

    def remove_alias(self, name: str, alias: str) -> int:
        raise self._read_only("aliases cannot be changed")

    def delete(self, ref: ModelRef | str, *, force: bool = False) -> list[int]:
        raise self._read_only("versions cannot be deleted")


def open_models(settings: Settings) -> Registry:
    """What a server serves: the files of server.model_paths (FileModels, no registry read
    or created), else the registry directory."""
    if settings.server.model_paths:
        return FileModels.from_settings(settings)
    return Registry(settings.registry_path)
