"""Registration entry points: a model file or directory (read by its format), a format's
Candidate, or an in-memory estimator; each becomes the next version through Registry._commit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.registry.artifacts import check_is_estimator, dump_estimator
from mlserve.registry.refs import validate_alias, validate_name
from mlserve.runtime import formats
from mlserve.runtime.formats import Candidate
from mlserve.schemas import ColumnSpec, ModelMetadata, TaskKind

__all__ = ["Intake"]


class Intake:
    """The registering half of Registry (mixed into it: Registry._commit writes a version)."""

    _commit: Callable[..., ModelMetadata]

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
        example: Sequence[Mapping[str, Any]] | None = None,
        check: bool = True,
        trust: Sequence[str] = (),
    ) -> ModelMetadata:
        """Validate a model file (joblib, skops, ONNX) or MLflow model directory and add it as
        the next version of `name`.

        `example` (rows of real inputs) types the signature; `check` predicts it (or a row
        built from the signature) first, so a model that cannot predict is never registered;
        `trust` names types a skops file may hold beyond the default trusted ones."""
        validate_name(name)
        for alias in aliases:
            validate_alias(alias)
        path = Path(artifact).expanduser()
        if not path.exists():
            raise InvalidModelError(f"{path} does not exist")
        fmt = formats.detect(path)
        candidate = fmt.read(path, trust=trust)
        check_is_estimator(candidate.estimator, where=str(path))
        return self.register_candidate(
            candidate,
            format_name=fmt.name,
            name=name,
            aliases=aliases,
            description=description,
            tags=tags,
            metrics=metrics,
            training=training,
            source=source or str(path.resolve()),
            task=task,
            example=example,
            check=check,
        )

    def register_candidate(
        self,
        candidate: Candidate,
        *,
        format_name: str,
        name: str,
        aliases: Sequence[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        source: str,
        task: TaskKind | None = None,
        example: Sequence[Mapping[str, Any]] | None = None,
        check: bool = True,
        keep: Mapping[str, Any] | None = None,
    ) -> ModelMetadata:
        """Add a model read by its format as the next version (what the user gives wins over
        what the format knows: task, example, tags). `keep` holds metadata fields recorded as
        given instead of described from the estimator (a bundle's signature, profile)."""
        validate_name(name)
        for alias in aliases:
            validate_alias(alias)
        return self._commit(
            candidate.data,
            candidate.estimator,
            name=name,
            aliases=aliases,
            description=description,
            tags={**candidate.tags, **(tags or {})},
            metrics=metrics,
            training=training,
            source=source,
            task=task or candidate.task,
            saved_with=candidate.saved_with,
            feature_names=candidate.feature_names,
            columns=candidate.columns,
            example=example if example is not None else candidate.example,
            check=check,
            artifact=candidate.artifact,
            format_name=format_name,
            format_details=candidate.details,
            keep=keep,
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
        columns: Sequence[ColumnSpec] | None = None,
        example: Sequence[Mapping[str, Any]] | None = None,
        check: bool = True,
    ) -> ModelMetadata:
        """Serialize an in-memory estimator with joblib and add it as the next version.

        `feature_names` names the columns of a tabular model fitted on a plain array;
        `columns` is the typed signature of its training data (else it is inferred).
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
            columns=columns,
            example=example,
            check=check,
        )
