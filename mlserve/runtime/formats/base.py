"""What every model format shares: the Candidate a file becomes at registration, and the
ModelFormat protocol (read a user's file; load the stored artifact again when serving)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlserve.schemas import ColumnSpec, ModelMetadata, TaskKind

__all__ = ["Candidate", "ModelFormat"]


@dataclass(slots=True)
class Candidate:
    """A model offered for registration, read by its format.

    `data` is the one file the registry stores (named `artifact` in the version's folder) and
    `estimator` what serves: a scikit-learn estimator, or an adapter with the same methods
    (predict, predict_proba, classes_, n_features_in_). The rest is what the format knows
    about the model, used where the user gave nothing else."""

    data: bytes
    estimator: Any
    artifact: str
    saved_with: str | None = None  # the scikit-learn version that saved it, if not ours
    task: TaskKind | None = None
    example: list[dict[str, Any]] | None = None
    columns: list[ColumnSpec] | None = None
    feature_names: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)  # recorded as format_details
    tags: dict[str, str] = field(default_factory=dict)  # merged under the user's --tag


class ModelFormat(Protocol):
    """One way models are stored. `read` turns a user's file (or directory) into a Candidate,
    refusing what cannot serve (InvalidModelError, naming why); `load` turns the stored
    artifact back into what serves, raising anything on failure (the registry reports it)."""

    name: str

    def read(self, path: Path, *, trust: Sequence[str] = ()) -> Candidate: ...

    def load(self, data: bytes, *, origin: str, meta: ModelMetadata) -> Any: ...

    def details_of(self, meta: ModelMetadata) -> Mapping[str, Any]: ...
