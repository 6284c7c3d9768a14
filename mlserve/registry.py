"""The local model registry: the only code that touches the registry directory.

Layout::

    <root>/.lock                          serialises writers (file lock)
    <root>/.staging/<uuid>/               versions being written; invisible until renamed
    <root>/<name>/aliases.json            {"production": 3, ...}
    <root>/<name>/versions/<n>/model.joblib
    <root>/<name>/versions/<n>/metadata.json

A version becomes visible by one atomic rename of its fully written, fsynced staging folder, so a
writer killed at any point leaves either the whole version or none of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mlserve.errors import (
    IntegrityError,
    InvalidModelError,
    InvalidReferenceError,
    ModelNotFoundError,
    NotFoundError,
    RegistryError,
    UsageError,
)
from mlserve.fsutil import atomic_write_json
from mlserve.fsutil import fsync_dir as _fsync_dir
from mlserve.runtime import introspect
from mlserve.schemas import ModelMetadata, ModelSummary, TaskKind, VersionSummary

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
REF_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>[^:@]+)|@(?P<alias>[^:@]+))?$")
ARTIFACT = "model.joblib"
METADATA = "metadata.json"
ALIASES = "aliases.json"
LOCK_TIMEOUT_S = 120.0
STALE_STAGING_S = 3600.0


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model reference: `name`, `name:3` (version) or `name@production` (alias)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = REF_RE.match(text.strip())
        if not match:
            raise InvalidReferenceError(
                f"invalid model reference '{text}': use name, name:VERSION or name@ALIAS"
            )
        name = match["name"]
        validate_name(name)
        version: int | None = None
        if match["version"] is not None:
            # ASCII digits only: str.isdigit() also accepts '²' (int() refuses it) and '١'.
            if not re.fullmatch(r"[0-9]+", match["version"]) or int(match["version"]) < 1:
                raise InvalidReferenceError(
                    f"invalid model reference '{text}': the version must be a positive integer"
                )
            version = int(match["version"])
        alias = match["alias"]
        if alias is not None:
            validate_alias(alias)
        return cls(name=name, version=version, alias=alias)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidReferenceError(
            f"invalid model name '{name}': use letters, digits, '.', '_' or '-' "
            "(up to 64, starting with a letter or digit)"
        )
    return name


def validate_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias) or alias.isdigit():
        raise InvalidReferenceError(
            f"invalid alias '{alias}': use lowercase letters, digits, '_' or '-' (not only digits)"
        )
    return alias


@dataclass(slots=True)
class LoadedArtifact:
    """A verified, unpickled estimator with its metadata."""

    estimator: Any
    metadata: ModelMetadata
    warnings: list[str] = field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _environment_versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {
        "python_version": platform.python_version(),
        "sklearn_version": str(sklearn.__version__),
        "joblib_version": str(joblib.__version__),
    }


def _unpickle(data: bytes, *, origin: str) -> tuple[Any, str | None]:
    """joblib.load from bytes; returns the object and the scikit-learn version it was saved with
    when that differs from ours (scikit-learn warns about it on unpickling)."""
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    saved_with: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = joblib.load(io.BytesIO(data))
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            saved_with = str(w.message.original_sklearn_version)
        else:
            log.debug("warning while loading %s: %s", origin, w.message)
    return obj, saved_with


class Registry:
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
        path = self._model_dir(name) / ALIASES
        try:
            data = json.loads(path.read_text())
            return {str(k): int(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A hand-edited file can hold any JSON: report it instead of crashing.
            raise RegistryError(f"cannot read aliases file {path}: {exc}") from None

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
        try:
            return ModelMetadata.model_validate_json(raw)
        except ValueError as exc:
            raise RegistryError(f"metadata file {path} is corrupt: {exc}") from None

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
        out = []
        for name in self.names():
            with contextlib.suppress(ModelNotFoundError):  # deleted while listing
                out.append(self.summary(name))
        return out

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
        """Read, verify (sha256, size) and unpickle a version. Refuses changed artifacts."""
        meta = (
            ref
            if isinstance(ref, ModelMetadata)
            else self.resolve(ref, default_alias=default_alias)
        )
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
            estimator, _ = _unpickle(data, origin=str(path))
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything; report, never crash
            # What the exception says comes from code in the artifact: it goes to the log; the
            # message (which API clients see) names only its type.
            log.error("cannot unpickle %s: %s: %s", path, type(exc).__name__, exc)
            raise IntegrityError(
                f"artifact {path} of {meta.name}:{meta.version} cannot be loaded: "
                f"{type(exc).__name__} while unpickling (details in the log)"
            ) from exc
        notes = version_mismatch_warnings(meta)
        for note in notes:
            log.warning("%s", note)
        return LoadedArtifact(estimator=estimator, metadata=meta, warnings=notes)

    # ----------------------------------------------------------------- writing
    def register(
        self,
        artifact: Path | str,
        *,
        name: str,
        aliases: Sequence[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        source: str | None = None,
        task: TaskKind | None = None,
    ) -> ModelMetadata:
        """Validate a joblib file and add it as the next version of `name`."""
        validate_name(name)
        for alias in aliases:
            validate_alias(alias)
        path = Path(artifact).expanduser()
        data = _read_candidate(path)
        try:
            estimator, saved_with = _unpickle(data, origin=str(path))
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything; report, never crash
            raise InvalidModelError(
                f"{path} is not a loadable joblib model: {type(exc).__name__}: {exc}"
            ) from None
        _check_is_estimator(estimator, where=str(path))
        return self._commit(
            data,
            estimator,
            name=name,
            aliases=aliases,
            description=description,
            tags=tags,
            metrics=metrics,
            training=training,
            source=source or str(path.resolve()),
            task=task,
            saved_with=saved_with,
        )

    def register_estimator(
        self,
        estimator: Any,
        *,
        name: str,
        aliases: Sequence[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        source: str = "mlserve train",
        task: TaskKind | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> ModelMetadata:
        """Serialize an in-memory estimator with joblib and add it as the next version.

        `feature_names` names the columns of a tabular model fitted on a plain array.
        """
        validate_name(name)
        for alias in aliases:
            validate_alias(alias)
        return self._commit(
            dump_estimator(estimator),
            estimator,
            name=name,
            aliases=aliases,
            description=description,
            tags=tags,
            metrics=metrics,
            training=training,
            source=source,
            task=task,
            saved_with=None,
            feature_names=feature_names,
        )

    def _commit(
        self,
        data: bytes,
        estimator: Any,
        *,
        name: str,
        aliases: Sequence[str],
        description: str,
        tags: Mapping[str, str] | None,
        metrics: Mapping[str, Any] | None,
        training: Mapping[str, Any] | None,
        source: str,
        task: TaskKind | None,
        saved_with: str | None,
        feature_names: Sequence[str] | None = None,
    ) -> ModelMetadata:
        _check_is_estimator(estimator, where="the model")
        introspect.check_fitted(estimator)
        kind = introspect.detect_task(estimator, task)
        schema = introspect.input_schema(estimator, kind)
        if feature_names is not None and schema.kind == "tabular" and schema.feature_names is None:
            if len(feature_names) != schema.n_features:
                raise InvalidModelError(
                    f"{len(feature_names)} feature names given for a model "
                    f"taking {schema.n_features} features"
                )
            schema.feature_names = list(feature_names)
        classes = introspect.classes(estimator) if kind != "tabular-regression" else None
        env = _environment_versions()
        if saved_with:
            env["sklearn_version"] = saved_with
        draft = dict(
            name=name,
            created_at=datetime.now(UTC),
            source=source,
            description=description,
            tags=dict(tags or {}),
            sha256=sha256_bytes(data),
            size_bytes=len(data),
            artifact=ARTIFACT,
            estimator=introspect.describe_class(estimator),
            task=kind,
            input_schema=schema,
            classes=classes,
            has_predict_proba=callable(getattr(estimator, "predict_proba", None))
            and kind != "tabular-regression",
            metrics=dict(metrics or {}),
            training=dict(training or {}),
            **env,
        )
        # Stage outside the lock (the slow part), then publish under it with one rename.
        self._ensure_root()
        staging_root = self.root / ".staging"
        staging = staging_root / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            _write_synced(staging / ARTIFACT, data)
            with self._locked():
                self._clean_stale_staging()
                model_dir = self._model_dir(name)
                versions_dir = model_dir / "versions"
                versions_dir.mkdir(parents=True, exist_ok=True)
                existing = self._versions_in(model_dir)
                # Never reuse a number, even of a deleted version: a cached answer or a log line
                # naming name:N must keep meaning one artifact.
                version = max([*existing, self._highest_ever(model_dir)], default=0) + 1
                meta = ModelMetadata(version=version, **draft)
                _write_synced(staging / METADATA, meta.model_dump_json(indent=2).encode())
                _fsync_dir(staging)
                published = versions_dir / str(version)
                os.rename(staging, published)
                _fsync_dir(versions_dir)
                try:
                    atomic_write_json(model_dir / ".highest", version)
                    if aliases:
                        current = self.aliases(name)
                        current.update(dict.fromkeys(aliases, version))
                        atomic_write_json(model_dir / ALIASES, current)
                except OSError:
                    # A version and its aliases land together or not at all: unpublish it
                    # (back to staging, removed below). A rename needs no free space.
                    with contextlib.suppress(OSError):
                        os.rename(published, staging)
                        _fsync_dir(versions_dir)
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

    @staticmethod
    def _highest_ever(model_dir: Path) -> int:
        try:
            return int((model_dir / ".highest").read_text())
        except (FileNotFoundError, ValueError):
            return 0

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
            current = self.aliases(name)
            current[alias] = version
            self._write_aliases(name, current)

    def remove_alias(self, name: str, alias: str) -> int:
        validate_alias(alias)
        with self._locked():
            current = self.aliases(name)
            if alias not in current:
                self.versions(name)  # 404 for an unknown model first
                raise NotFoundError(f"model '{name}' has no alias '{alias}'")
            version = current.pop(alias)
            self._write_aliases(name, current)
            return version

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
                if pointing:
                    self._write_aliases(
                        ref.name, {a: v for a, v in aliases.items() if a not in pointing}
                    )
                for version in doomed:
                    os.rename(self._version_dir(ref.name, version), trash / str(version))
                _fsync_dir(model_dir / "versions")
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


def dump_estimator(estimator: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    return buf.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _check_is_estimator(obj: Any, *, where: str) -> None:
    # A class has a callable `predict` too (the unbound function): only instances can serve.
    if isinstance(obj, type):
        raise InvalidModelError(
            f"{where} holds the class {obj.__name__}, not a fitted estimator instance"
        )
    if not callable(getattr(obj, "predict", None)):
        raise InvalidModelError(
            f"{where} holds a {type(obj).__name__}, not an estimator with predict()"
        )


def _read_candidate(path: Path) -> bytes:
    if not path.exists():
        raise InvalidModelError(f"{path} does not exist")
    if path.is_dir():
        raise InvalidModelError(f"{path} is a directory, not a joblib model file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelError(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise InvalidModelError(f"{path} is empty, not a joblib model file")
    return data


def version_mismatch_warnings(meta: ModelMetadata) -> list[str]:
    """Say when a version was saved with another scikit-learn than the one running now."""
    import sklearn

    if meta.sklearn_version != sklearn.__version__:
        return [
            f"{meta.name}:{meta.version} was saved with scikit-learn {meta.sklearn_version} "
            f"and is loaded with scikit-learn {sklearn.__version__}; predictions may differ"
        ]
    return []
