"""Portable bundles: one registry version (artifact and metadata) as a tar.gz, to move it to
another registry with its sha256, metrics, training profile and signature."""

# A bundle holds two regular files, in this order:
#
#     metadata.json   {"bundle_format": 1, "exported_by": "mlserve X", "metadata": {...}}
#     <artifact>      the version's artifact file under its stored name (model.joblib, ...)
#
# `metadata` is the version's ModelMetadata as the registry stores it. The sha256 in it detects
# a bundle changed or damaged since export; it is not a signature: whoever can write a bundle
# can write a matching sha256, so import bundles from sources you trust (a joblib artifact runs
# code when loaded).
#
# Reading never extracts to disk: members are read into memory by name, after checking that
# each is a regular file with a plain name, within the size limits; the decompressed stream is
# capped too, so a gzip bomb stops at the limit.

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlserve import __version__
from mlserve.errors import IntegrityError, InvalidModelError, MlserveError, RegistryError
from mlserve.fsutil import atomic_write_bytes
from mlserve.registry.artifacts import sha256_bytes
from mlserve.registry.refs import ModelRef, validate_alias, validate_name
from mlserve.registry.store import METADATA, Registry
from mlserve.runtime import formats
from mlserve.runtime.formats import Candidate
from mlserve.schemas import ModelMetadata

__all__ = [
    "BUNDLE_FORMAT",
    "MAX_ARTIFACT_BYTES",
    "MAX_METADATA_BYTES",
    "Bundle",
    "build_bundle",
    "bundle_filename",
    "export_bundle",
    "import_bundle",
    "read_bundle",
]

log = logging.getLogger("mlserve.registry")

BUNDLE_FORMAT = 1
MAX_METADATA_BYTES = 64 * 2**20
MAX_ARTIFACT_BYTES = 2 * 2**30
# What an import records anew; every other metadata field is kept as exported.
NOT_KEPT = frozenset({"name", "version", "created_at", "source", "sha256", "size_bytes"})
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TAR_SLACK = 1 << 20  # headers and padding around the members


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle read and verified: the exported version's metadata and its artifact bytes."""

    metadata: ModelMetadata
    data: bytes
    bundle_format: int
    exported_by: str | None


def bundle_filename(meta: ModelMetadata) -> str:
    """The file name a version's bundle goes by: NAME-VERSION.tar.gz."""
    return f"{meta.name}-{meta.version}.tar.gz"


# ---------------------------------------------------------------------------- export
def build_bundle(
    registry: Registry, ref: ModelRef | str, *, default_alias: str = "production"
) -> tuple[ModelMetadata, bytes]:
    """The version `ref` names as bundle bytes (gzip-compressed tar). Refuses a version whose
    artifact no longer matches its registered sha256 or size (IntegrityError)."""
    meta = registry.resolve(ref, default_alias=default_alias)
    path = registry.artifact_path(meta)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"artifact {path} of {meta.name}:{meta.version} is missing") from None
    except OSError as exc:
        raise RegistryError(f"cannot read artifact {path}: {exc.strerror}") from None
    if len(data) != meta.size_bytes or sha256_bytes(data) != meta.sha256:
        raise IntegrityError(
            f"artifact {path} of {meta.name}:{meta.version} does not match its registered "
            "sha256 and size: changed after registration; refusing to export it"
        )
    document = {
        "bundle_format": BUNDLE_FORMAT,
        "exported_by": f"mlserve {__version__}",
        "metadata": meta.model_dump(mode="json"),
    }
    head = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    mtime = int(meta.created_at.timestamp())
    buf = io.BytesIO()
    # mtime=0 in the gzip header and the version's creation time on the members: exporting
    # one version twice gives the same bytes.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member, content in ((METADATA, head), (meta.artifact, data)):
            tar.addfile(_tar_info(member, len(content), mtime), io.BytesIO(content))
    return meta, buf.getvalue()


def _tar_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info


def export_bundle(
    registry: Registry,
    ref: ModelRef | str,
    out_path: Path | str,
    *,
    default_alias: str = "production",
) -> tuple[ModelMetadata, Path]:
    """Write the version `ref` names as a bundle at `out_path` (a directory: NAME-VERSION.tar.gz
    inside it), atomically: a temp file renamed over the target, never a half-written bundle.
    Returns the version's metadata and the path written."""
    meta, payload = build_bundle(registry, ref, default_alias=default_alias)
    target = Path(out_path).expanduser()
    if target.is_dir():
        target = target / bundle_filename(meta)
    try:
        atomic_write_bytes(target, payload)
    except OSError as exc:
        raise RegistryError(f"cannot write bundle {target}: {exc.strerror or exc}") from None
    log.debug("exported %s:%s to %s (%d bytes)", meta.name, meta.version, target, len(payload))
    return meta, target


# ---------------------------------------------------------------------------- import
class _TooLarge(Exception):
    pass


class _CappedReader:
    """A file's read() that raises once more than `limit` bytes have been read through it."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._left + 1
        chunk = self._raw.read(min(size, self._left + 1))
        self._left -= len(chunk)
        if self._left < 0:
            raise _TooLarge
        return chunk


def _refuse(path: Path, why: str) -> InvalidModelError:
    return InvalidModelError(f"bundle {path} {why}; refusing it")


def _members(path: Path, max_artifact_bytes: int) -> dict[str, bytes]:
    """The bundle's members by name, read into memory after checking each header."""
    found: dict[str, bytes] = {}
    limit = MAX_METADATA_BYTES + max_artifact_bytes + TAR_SLACK
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            tar = tarfile.open(fileobj=_CappedReader(gz, limit), mode="r|")  # type: ignore[call-overload]
            while (info := tar.next()) is not None:
                name = info.name
                if not PLAIN_NAME.match(name):
                    raise _refuse(path, f"holds a member named {name!r} (only plain file names)")
                if not info.isreg():
                    raise _refuse(path, f"holds {name!r}, which is not a regular file")
                if name in found:
                    raise _refuse(path, f"holds {name!r} twice")
                if len(found) == 2:
                    raise _refuse(path, f"holds more than two files ({name!r} is extra)")
                cap = MAX_METADATA_BYTES if name == METADATA else max_artifact_bytes
                if info.size > cap:
                    raise _refuse(path, f"holds {name!r} of {info.size:,} bytes (limit {cap:,})")
                member = tar.extractfile(info)
                if member is None:  # pragma: no cover - a regular file always has a reader
                    raise _refuse(path, f"holds {name!r} that cannot be read")
                found[name] = member.read()
    except FileNotFoundError:
        raise InvalidModelError(f"bundle {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidModelError(f"{path} is a directory, not a bundle file") from None
    except _TooLarge:
        raise _refuse(path, f"unpacks to more than {limit:,} bytes") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidModelError(
            f"{path} is not an mlserve bundle (a tar.gz of metadata.json and the model): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    except PermissionError as exc:
        raise InvalidModelError(f"cannot read bundle {path}: {exc.strerror}") from None
    except OSError as exc:  # gzip's "Not a gzipped file" is an OSError too
        raise InvalidModelError(
            f"{path} is not an mlserve bundle (a tar.gz): {exc.strerror or exc}"
        ) from None
    return found


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(map(str, err.get("loc", ()))) or "metadata"
    return f"{where}: {err.get('msg', 'invalid')}"


def read_bundle(path: Path | str, *, max_artifact_bytes: int = MAX_ARTIFACT_BYTES) -> Bundle:
    """Read and verify a bundle: safe members, valid metadata, the artifact's size and sha256
    as recorded. A damaged or changed bundle raises InvalidModelError."""
    path = Path(path).expanduser()
    members = _members(path, max_artifact_bytes)
    if METADATA not in members:
        raise _refuse(path, f"has no {METADATA}")
    try:
        document = json.loads(members[METADATA])
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the limit
        raise _refuse(path, f"has a {METADATA} that is not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise _refuse(path, f"has a {METADATA} without the version's metadata")
    version = document.get("bundle_format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _refuse(path, f"has no valid bundle_format in {METADATA}")
    if version > BUNDLE_FORMAT:
        raise _refuse(
            path,
            f"is in bundle format {version}, newer than this mlserve reads ({BUNDLE_FORMAT}): "
            "upgrade mlserve",
        )
    try:
        meta = ModelMetadata.model_validate(document["metadata"])
    except ValidationError as exc:
        raise _refuse(path, f"has invalid metadata ({_first_error(exc)})") from None
    artifact = meta.artifact
    if not PLAIN_NAME.match(artifact) or artifact == METADATA:
        raise _refuse(path, f"names an invalid artifact {artifact!r}")
    extra = sorted(set(members) - {METADATA, artifact})
    if extra:
        raise _refuse(path, f"holds {extra[0]!r}, not the artifact its metadata names")
    if artifact not in members:
        raise _refuse(path, f"has no artifact {artifact!r}")
    data = members[artifact]
    if len(data) != meta.size_bytes:
        raise _refuse(
            path,
            f"is tampered or damaged: its artifact is {len(data):,} bytes, the metadata records "
            f"{meta.size_bytes:,}",
        )
    digest = sha256_bytes(data)
    if digest != meta.sha256:
        raise _refuse(
            path,
            f"is tampered or damaged: its artifact's sha256 {digest[:12]}… does not match the "
            f"{meta.sha256[:12]}… in its metadata",
        )
    exported_by = document.get("exported_by")
    return Bundle(
        metadata=meta,
        data=data,
        bundle_format=version,
        exported_by=exported_by if isinstance(exported_by, str) else None,
    )


def _load_estimator(path: Path, bundle: Bundle) -> Any:
    meta = bundle.metadata
    fmt = formats.get(meta.format)
    origin = f"{path}:{meta.artifact}"
    try:
        return fmt.load(bundle.data, origin=origin, meta=meta)
    except MlserveError:
        raise
    except Exception as exc:  # noqa: BLE001 - loading can raise anything; report, never crash
        log.error("cannot load %s: %s: %s", origin, type(exc).__name__, exc)
        raise InvalidModelError(
            f"the model in bundle {path} cannot be loaded ({meta.format}): "
            f"{type(exc).__name__} while loading it (details in the log)"
        ) from exc


def import_bundle(
    registry: Registry,
    path: Path | str,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    check: bool = True,
    max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
) -> ModelMetadata:
    """Register a bundle as the next version of `name` (default: the exported model's name).

    The artifact (same bytes, same sha256), metrics, training profile, signature, task,
    classes, description, tags and format are kept; `check` predicts a row built from the
    signature first. A damaged or changed bundle raises InvalidModelError; nothing is written
    unless the whole version is."""
    path = Path(path).expanduser()
    bundle = read_bundle(path, max_artifact_bytes=max_artifact_bytes)
    meta = bundle.metadata
    target = validate_name(name if name is not None else meta.name)
    for alias in aliases:
        validate_alias(alias)
    estimator = _load_estimator(path, bundle)
    candidate = Candidate(
        data=bundle.data,
        estimator=estimator,
        artifact=meta.artifact,
        saved_with=meta.sklearn_version,
        task=meta.task,
        details=dict(meta.format_details),
    )
    keep = meta.model_dump(exclude=set(NOT_KEPT))
    imported = registry.register_candidate(
        candidate,
        format_name=meta.format,
        name=target,
        aliases=aliases,
        description=meta.description,
        tags=meta.tags,
        metrics=meta.metrics,
        training=meta.training,
        source=f"bundle {path.name} (from {meta.name}:{meta.version})",
        task=meta.task,
        check=check,
        keep=keep,
    )
    log.debug(
        "imported %s:%s from %s (%s:%s)",
        imported.name,
        imported.version,
        path,
        meta.name,
        meta.version,
    )
    return imported
