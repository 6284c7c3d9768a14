"""The Registry: versions, aliases and metadata of models in one directory on disk."""

# Layout::
#
#     <root>/.lock                          serialises writers (file lock)
#     <root>/.staging/<uuid>/               versions being written; invisible until renamed
#     <root>/<name>/aliases.json            {"production": 3, ...}
#     <root>/<name>/.highest                the highest version number ever handed out
#     <root>/<name>/versions/<n>/model.joblib
#     <root>/<name>/versions/<n>/metadata.json
#     <root>/<name>/versions/<n>/aliases.intent   aliases it was published with, until settled
#
# A version becomes visible by one atomic rename of its fully written, fsynced staging folder,
# with the aliases it asked for (journal.py), so a writer killed at any point leaves either the
# whole version with its aliases or none of it.

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mlserve.errors import (
    IntegrityError,
    InvalidModelError,
    MlserveError,
    ModelNotFoundError,
    NotFoundError,
    RegistryError,
    UsageError,
)
from mlserve.fsutil import atomic_write_json, fsync_dir, write_synced
from mlserve.registry.artifacts import (
    LoadedArtifact,
    describe_estimator,
    sha256_bytes,
    smoke_check,
    version_mismatch_warnings,
)
from mlserve.registry.intake import Intake
from mlserve.registry.journal import (
    ALIASES,
    ARTIFACT,
    INTENT,
    METADATA,
    highest_ever,
    read_aliases,
    reserve_number,
    settle,
    write_intent,
)
from mlserve.registry.preloaded import PRELOADED
from mlserve.registry.problems import corrupt, problem_of, unreadable
from mlserve.registry.refs import NAME_RE, ModelRef, validate_alias, validate_name
from mlserve.runtime import formats
from mlserve.schemas import ColumnSpec, ModelMetadata, ModelSummary, TaskKind, VersionSummary

__all__ = [
    "ALIASES",
    "ARTIFACT",
    "LOCK_TIMEOUT_S",
    "METADATA",
    "STALE_STAGING_S",
    "Registry",
    "describe_version",
    "write_synced",
]

# The registry's logger, whichever of its modules logs.
log = logging.getLogger("mlserve.registry")

LOCK_TIMEOUT_S = 120.0
STALE_STAGING_S = 3600.0


class Registry(Intake):
    """Versions, aliases and metadata of models in one directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()

    # ----------------------------------------------------------------- paths and locking
    def _model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / "versions" / str(version)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(
                f"cannot create registry directory {self.root}: {exc.strerror}"
            ) from None
        if not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} is not a directory")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_root()
        lock = FileLock(str(self.root / ".lock"), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise RegistryError(
                f"registry {self.root} is locked by another writer (waited {LOCK_TIMEOUT_S:.0f} s)"
            ) from None
        except OSError as exc:  # permission denied, a read-only file system, ...
            raise RegistryError(f"registry {self.root} is not writable: {exc.strerror}") from None
        try:
            yield
        except PermissionError as exc:
            raise RegistryError(f"registry {self.root} is not writable: {exc.strerror}") from None
        finally:
            lock.release()

    def check_readable(self) -> None:
        """Raise RegistryError when the registry directory exists but cannot be listed."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} is not a directory")
        try:
            with os.scandir(self.root) as entries:  # closed, or it leaks a ResourceWarning
                next(entries, None)
        except PermissionError:
            raise RegistryError(
                f"registry {self.root} is not readable (permission denied)"
            ) from None

    # ----------------------------------------------------------------- reading
    def names(self) -> list[str]:
        self.check_readable()
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir()
            and NAME_RE.match(p.name)
            and (p / "versions").is_dir()
            and self._versions_in(p)
        )

    @staticmethod
    def _versions_in(model_dir: Path) -> list[int]:
        vdir = model_dir / "versions"
        if not vdir.is_dir():
            return []
        return sorted(
            int(p.name) for p in vdir.iterdir() if p.name.isdigit() and (p / METADATA).is_file()
        )

    def versions(self, name: str) -> list[int]:
        found = self._versions_in(self._model_dir(name))
        if not found:
            raise ModelNotFoundError(f"model '{name}' is not in the registry {self.root}")
        return found

    def aliases(self, name: str) -> dict[str, int]:
        """aliases.json with the aliases of versions published but not yet settled."""
        return read_aliases(self.root, self._model_dir(name))

    def metadata(self, name: str, version: int) -> ModelMetadata:
        path = self._version_dir(name, version) / METADATA
        try:
            raw = path.read_text()
        except FileNotFoundError:
            if not self._versions_in(self._model_dir(name)):
                raise ModelNotFoundError(
                    f"model '{name}' is not in the registry {self.root}"
                ) from None
            raise ModelNotFoundError(f"model '{name}' has no version {version}") from None
        except OSError as exc:  # permissions, I/O
            raise unreadable(self.root, path, exc) from None
        except ValueError as exc:  # not UTF-8
            raise corrupt(self.root, path, problem_of(exc)) from None
        try:
            return ModelMetadata.model_validate_json(raw)
        except ValueError as exc:
            # One line naming the file: a pydantic message would quote the file's contents.
            raise corrupt(self.root, path, problem_of(exc)) from None

    def resolve_version(self, ref: ModelRef | str, *, default_alias: str = "production") -> int:
        """The version a reference points at; a bare name means its default alias, else latest."""
        if isinstance(ref, str):
            ref = ModelRef.parse(ref)
        versions = self.versions(ref.name)
        if ref.version is not None:
            if ref.version not in versions:
                raise ModelNotFoundError(
                    f"model '{ref.name}' has no version {ref.version} "
                    f"(versions: {', '.join(map(str, versions))})"
                )
            return ref.version
        aliases = self.aliases(ref.name)
        if ref.alias is not None:
            if ref.alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise ModelNotFoundError(
                    f"model '{ref.name}' has no alias '{ref.alias}' (aliases: {known})"
                )
            return aliases[ref.alias]
        if default_alias in aliases and aliases[default_alias] in versions:
            return aliases[default_alias]
        return versions[-1]

    def resolve(self, ref: ModelRef | str, *, default_alias: str = "production") -> ModelMetadata:
        if isinstance(ref, str):
            ref = ModelRef.parse(ref)
        return self.metadata(ref.name, self.resolve_version(ref, default_alias=default_alias))

    def summary(self, name: str) -> ModelSummary:
        versions = self.versions(name)
        latest = self.metadata(name, versions[-1])
        return ModelSummary(
            name=name,
            task=latest.task,
            latest_version=versions[-1],
            versions=versions,
            aliases=self.aliases(name),
        )

    def list_models(self) -> list[ModelSummary]:
        """Every model; one whose files cannot be read is listed with its `error` (and
        whatever else can be read), so one broken model never hides the others."""
        out = []
        for name in self.names():
            with contextlib.suppress(ModelNotFoundError):  # deleted while listing
                out.append(self.checked_summary(name))
        return out

    def checked_summary(self, name: str) -> ModelSummary:
        """summary(name); for a model whose registry files cannot be read, what can be read
        of it, with the one-line reason in `error`."""
        try:
            return self.summary(name)
        except ModelNotFoundError:
            raise
        except RegistryError as exc:
            error = exc.message
        versions = self.versions(name)
        task = aliases = None
        with contextlib.suppress(RegistryError):
            task = self.metadata(name, versions[-1]).task
        with contextlib.suppress(RegistryError):
            aliases = self.aliases(name)
        return ModelSummary(
            name=name,
            task=task,
            latest_version=versions[-1],
            versions=versions,
            aliases=aliases or {},
            error=error,
        )

    def version_summaries(self, name: str) -> list[VersionSummary]:
        aliases = self.aliases(name)
        out = []
        for version in self.versions(name):
            meta = self.metadata(name, version)
            out.append(
                VersionSummary(
                    version=version,
                    created_at=meta.created_at,
                    aliases=sorted(a for a, v in aliases.items() if v == version),
                    sha256=meta.sha256,
                    size_bytes=meta.size_bytes,
                    metrics=meta.metrics,
                )
            )
        return out

    def state_token(self) -> str:
        """Changes whenever any version or alias changes; cheap enough to poll."""
        parts: list[str] = []
        if not self.root.is_dir():
            return ""
        for name in self.names():
            mdir = self._model_dir(name)
            parts.append(f"{name}:{self._versions_in(mdir)}")
            alias_file = mdir / ALIASES
            with contextlib.suppress(FileNotFoundError):
                st = alias_file.stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    # ----------------------------------------------------------------- loading
    def artifact_path(self, meta: ModelMetadata) -> Path:
        return self._version_dir(meta.name, meta.version) / meta.artifact

    def load(
        self, ref: ModelRef | str | ModelMetadata, *, default_alias: str = "production"
    ) -> LoadedArtifact:
        """Read, verify (sha256, size) and unpickle a version. Refuses changed artifacts.
        An estimator the process was forked with for these very bytes is taken instead
        (preloaded.PRELOADED: serve --workers)."""
        meta = (
            ref
            if isinstance(ref, ModelMetadata)
            else self.resolve(ref, default_alias=default_alias)
        )
        kept = PRELOADED.take(("artifact", meta.format, meta.sha256))
        if kept is not None:
            return self._loaded(kept, meta)
        path = self.artifact_path(meta)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"artifact {path} of {meta.name}:{meta.version} is missing"
            ) from None
        except OSError as exc:
            raise RegistryError(f"cannot read artifact {path}: {exc.strerror}") from None
        if len(data) != meta.size_bytes:
            raise IntegrityError(
                f"artifact {path} of {meta.name}:{meta.version} is {len(data)} bytes, "
                f"{meta.size_bytes} were registered: truncated or replaced; refusing to load it"
            )
        digest = sha256_bytes(data)
        if digest != meta.sha256:
            raise IntegrityError(
                f"artifact {path} of {meta.name}:{meta.version} does not match its registered "
                f"sha256 ({digest[:12]}… != {meta.sha256[:12]}…): changed after registration; "
                "refusing to load it"
            )
        try:
            estimator = formats.get(meta.format).load(data, origin=str(path), meta=meta)
        except MlserveError:
            raise
        except Exception as exc:  # noqa: BLE001 - loading can raise anything; report, never crash
            # What the exception says comes from code in the artifact: it goes to the log; the
            # message (which API clients see) names only its type.
            log.error("cannot unpickle %s: %s: %s", path, type(exc).__name__, exc)
            raise IntegrityError(
                f"artifact {path} of {meta.name}:{meta.version} cannot be loaded: "
                f"{type(exc).__name__} while loading it ({meta.format}; details in the log)"
            ) from exc
        return self._loaded(estimator, meta)

    def _loaded(self, estimator: Any, meta: ModelMetadata) -> LoadedArtifact:
        notes = version_mismatch_warnings(meta)
        for note in notes:
            log.warning("%s", note)
        return LoadedArtifact(estimator=estimator, metadata=meta, warnings=notes)

    def preload(self, meta: ModelMetadata) -> None:
        """Load `meta` now and keep its estimator for the processes this one forks, each of
        which takes it in its first load of these bytes rather than reading them again."""
        estimator = self.load(meta).estimator
        PRELOADED.keep(("artifact", meta.format, meta.sha256), estimator)

    # ----------------------------------------------------------------- writing
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
        """Publish a new version of `name`: its metadata from describe_version(**fields)."""
        if "/" in artifact or artifact in ("", ".", "..", METADATA, INTENT):
            raise InvalidModelError(f"invalid artifact name {artifact!r}")
        # Described and smoke-checked before anything is written: a refused model leaves no trace.
        draft = describe_version(data, estimator, name=name, artifact=artifact, **fields)
        # Stage outside the lock (the slow part), then publish under it with one rename.
        self._ensure_root()
        staging_root = self.root / ".staging"
        staging = staging_root / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            write_synced(staging / artifact, data)
            with self._locked():
                self._clean_stale_staging()
                model_dir = self._model_dir(name)
                versions_dir = model_dir / "versions"
                versions_dir.mkdir(parents=True, exist_ok=True)
                settle(self.root, model_dir)  # what a killed writer left, first
                existing = self._versions_in(model_dir)
                # Never reuse a number, even of a deleted version: a cached answer or a log line
                # naming name:N must keep meaning one artifact. Reserved before publishing, so
                # a writer killed after the rename cannot leave the counter behind.
                version = max([*existing, highest_ever(model_dir)], default=0) + 1
                reserve_number(model_dir, version)
                meta = ModelMetadata(version=version, **draft)
                write_synced(staging / METADATA, meta.model_dump_json(indent=2).encode())
                if aliases:
                    write_intent(staging, aliases)
                fsync_dir(staging)
                published = versions_dir / str(version)
                # The one step that publishes the version and its aliases together.
                os.rename(staging, published)
                fsync_dir(versions_dir)
                try:
                    settle(self.root, model_dir)  # the intent into aliases.json
                except OSError:
                    # aliases.json could not be written: unpublish the version (back to
                    # staging, removed below; a rename needs no free space), so the caller's
                    # error means "nothing registered". Its number stays reserved.
                    with contextlib.suppress(OSError):
                        os.rename(published, staging)
                        fsync_dir(versions_dir)
                    raise
        except OSError as exc:
            raise RegistryError(
                f"cannot write to registry {self.root}: {exc.strerror or exc}"
            ) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.debug("registered %s:%s (%s)", name, version, meta.sha256[:12])
        return meta

    def _clean_stale_staging(self) -> None:
        """Remove staging folders left by writers that died (older than an hour)."""
        staging_root = self.root / ".staging"
        if not staging_root.is_dir():
            return
        cutoff = time.time() - STALE_STAGING_S
        for entry in staging_root.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        validate_alias(alias)
        with self._locked():
            if version not in self.versions(name):
                raise NotFoundError(f"model '{name}' has no version {version}")
            self._settle(name)
            current = self.aliases(name)
            current[alias] = version
            self._write_aliases(name, current)

    def remove_alias(self, name: str, alias: str) -> int:
        validate_alias(alias)
        with self._locked():
            self._settle(name)
            current = self.aliases(name)
            if alias not in current:
                self.versions(name)  # 404 for an unknown model first
                raise NotFoundError(f"model '{name}' has no alias '{alias}'")
            version = current.pop(alias)
            self._write_aliases(name, current)
            return version

    def _settle(self, name: str) -> None:
        """Complete what a killed writer left of the model (under the lock)."""
        try:
            settle(self.root, self._model_dir(name))
        except OSError as exc:
            raise RegistryError(f"cannot write to registry {self.root}: {exc.strerror}") from None

    def _write_aliases(self, name: str, aliases: dict[str, int]) -> None:
        try:
            atomic_write_json(self._model_dir(name) / ALIASES, aliases)
        except OSError as exc:
            raise RegistryError(f"cannot write to registry {self.root}: {exc.strerror}") from None

    def delete(self, ref: ModelRef | str, *, force: bool = False) -> list[int]:
        """Delete one version (name:3, name@alias) or a whole model (name). Returns what went.

        A version that an alias points at is only deleted with force=True (the alias goes too).
        """
        if isinstance(ref, str):
            ref = ModelRef.parse(ref)
        with self._locked():
            versions = self.versions(ref.name)
            self._settle(ref.name)
            aliases = self.aliases(ref.name)
            if ref.version is None and ref.alias is None:
                doomed = versions
            else:
                doomed = [self.resolve_version(ref)]
            pointing = sorted(a for a, v in aliases.items() if v in doomed)
            if pointing and not force:
                raise UsageError(
                    f"{ref} is pointed at by alias(es) {', '.join(pointing)}; "
                    "use --force to delete it and those aliases"
                )
            model_dir = self._model_dir(ref.name)
            trash = self.root / ".staging" / f"trash-{uuid.uuid4().hex}"
            trash.mkdir(parents=True)
            try:
                # A registry written before the counter was kept reliably: record the numbers
                # about to go, so they are never handed out again.
                reserve_number(model_dir, max(doomed))
                if pointing:
                    self._write_aliases(
                        ref.name, {a: v for a, v in aliases.items() if a not in pointing}
                    )
                for version in doomed:
                    os.rename(self._version_dir(ref.name, version), trash / str(version))
                fsync_dir(model_dir / "versions")
                if doomed == versions:
                    with contextlib.suppress(FileNotFoundError):
                        (model_dir / ALIASES).unlink()
            except OSError as exc:
                raise RegistryError(
                    f"cannot write to registry {self.root}: {exc.strerror}"
                ) from None
            finally:
                shutil.rmtree(trash, ignore_errors=True)
        return doomed


def describe_version(
    data: bytes,
    estimator: Any,
    *,
    name: str,
    description: str,
    tags: Mapping[str, str] | None,
    metrics: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None,
    source: str,
    task: TaskKind | None,
    saved_with: str | None,
    feature_names: Sequence[str] | None = None,
    columns: Sequence[ColumnSpec] | None = None,
    example: Sequence[Mapping[str, Any]] | None = None,
    check: bool = True,
    artifact: str = ARTIFACT,
    format_name: str = "joblib",
    format_details: Mapping[str, Any] | None = None,
    keep: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every metadata field of a new version but its number: what the estimator determines
    (describe_estimator), the sha256 and size of `data`, and, with `check`, n_outputs from a
    smoke prediction (a model that cannot predict is refused here). `keep`: fields recorded
    as given rather than re-described (an imported bundle keeps its signature, profile and
    versions). Registry._commit and FileModels (serving files without a registry) share it."""
    described = describe_estimator(
        estimator,
        task=task,
        saved_with=saved_with,
        feature_names=feature_names,
        columns=columns,
        example=example,
    )
    draft = dict(
        name=name,
        created_at=datetime.now(UTC),
        source=source,
        description=description,
        tags=dict(tags or {}),
        sha256=sha256_bytes(data),
        size_bytes=len(data),
        artifact=artifact,
        format=format_name,
        format_details=dict(format_details or {}),
        metrics=dict(metrics or {}),
        training=dict(training or {}),
        **described,
    )
    draft.update(keep or {})
    if check:
        draft["n_outputs"] = smoke_check(estimator, ModelMetadata(version=0, **draft), example)
    return draft
