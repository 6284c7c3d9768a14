"""The local model registry: the only code that touches the registry directory."""

from __future__ import annotations

from mlserve.registry.artifacts import (
    LoadedArtifact,
    dump_estimator,
    sha256_bytes,
    version_mismatch_warnings,
)
from mlserve.registry.files import FileModels, ReadOnlyModelsError, open_models
from mlserve.registry.problems import RegistryCorruptError
from mlserve.registry.refs import ALIAS_RE, NAME_RE, REF_RE, ModelRef, validate_alias, validate_name
from mlserve.registry.store import (
    ALIASES,
    ARTIFACT,
    LOCK_TIMEOUT_S,
    METADATA,
    STALE_STAGING_S,
    Registry,
)

__all__ = [
    "ALIASES",
    "ALIAS_RE",
    "ARTIFACT",
    "FileModels",
    "LOCK_TIMEOUT_S",
    "METADATA",
    "NAME_RE",
    "REF_RE",
    "ReadOnlyModelsError",
    "STALE_STAGING_S",
    "LoadedArtifact",
    "ModelRef",
    "Registry",
    "RegistryCorruptError",
    "dump_estimator",
    "open_models",
    "sha256_bytes",
    "validate_alias",
    "validate_name",
    "version_mismatch_warnings",
]
