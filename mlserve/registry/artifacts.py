"""Model artifacts as bytes: hashing, joblib (un)pickling, candidate checks, version stamps."""

from __future__ import annotations

import hashlib
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlserve.errors import InvalidModelError, MlserveError
from mlserve.runtime import introspect, signature
from mlserve.runtime.formats.joblib import dump as dump_estimator
from mlserve.runtime.formats.joblib import read_file as read_candidate
from mlserve.runtime.formats.joblib import unpickle
from mlserve.schemas import ColumnSpec, Label, ModelMetadata, TaskKind

__all__ = [
    "LoadedArtifact",
    "check_is_estimator",
    "describe_estimator",
    "dump_estimator",
    "environment_versions",
    "read_candidate",
    "sha256_bytes",
    "smoke_check",
    "unpickle",
    "version_mismatch_warnings",
]

# The registry's logger: these lines have always been logged as the registry's.
log = logging.getLogger("mlserve.registry")


@dataclass(slots=True)
class LoadedArtifact:
    """A verified, unpickled estimator with its metadata."""

    estimator: Any
    metadata: ModelMetadata
    warnings: list[str] = field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def environment_versions() -> dict[str, str]:
    """The Python, scikit-learn and joblib versions a new version is recorded with."""
    import joblib
    import sklearn

    return {
        "python_version": platform.python_version(),
        "sklearn_version": str(sklearn.__version__),
        "joblib_version": str(joblib.__version__),
    }


def check_is_estimator(obj: Any, *, where: str) -> None:
    """Refuse anything that cannot serve predictions: not an instance with predict()."""
    # A class has a callable `predict` too (the unbound function): only instances can serve.
    if isinstance(obj, type):
        raise InvalidModelError(
            f"{where} holds the class {obj.__name__}, not a fitted estimator instance"
        )
    if not callable(getattr(obj, "predict", None)):
        raise InvalidModelError(
            f"{where} holds a {type(obj).__name__}, not an estimator with predict()"
        )


def describe_estimator(
    estimator: Any,
    *,
    task: TaskKind | None,
    saved_with: str | None,
    feature_names: Sequence[str] | None,
    columns: Sequence[ColumnSpec] | None = None,
    example: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metadata fields a fitted estimator determines: class, task, typed input signature,
    classes, and the versions it is recorded with (`saved_with`: the scikit-learn that pickled
    it). `columns` (from the training data) or `example` (rows of real inputs) type the
    signature; without them it is inferred from the model, and what could not be is noted."""
    check_is_estimator(estimator, where="the model")
    introspect.check_native_booster(estimator)
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
    if schema.kind == "tabular" and schema.feature_names is not None:
        names = schema.feature_names
        if columns is not None:
            if [c.name for c in columns] != names:
                raise InvalidModelError("the training columns do not match the model's features")
            schema.columns = list(columns)
        elif schema.dataframe:
            schema.columns, schema.notes = signature.infer_columns(estimator, names, example)
        else:  # a float matrix: every column is a number
            seen = signature.columns_from_example(names, example or [])
            schema.columns = [
                ColumnSpec(name=n, dtype="float", nullable=bool(seen.get(n) and seen[n].nullable))
                for n in names
            ]
    classes: list[Label] | None = None
    if kind in ("text-classification", "tabular-classification"):
        classes = introspect.classes(estimator)
    elif kind == "anomaly-detection":
        classes = [-1, 1]  # outlier, inlier: scikit-learn's convention
    env = environment_versions()
    if saved_with:
        env["sklearn_version"] = saved_with
    has_proba = callable(getattr(estimator, "predict_proba", None)) and kind in (
        "text-classification",
        "tabular-classification",
        "tabular-multilabel",
    )
    return dict(
        estimator=introspect.describe_class(estimator),
        task=kind,
        input_schema=schema,
        classes=classes,
        has_predict_proba=has_proba,
        n_outputs=introspect.n_outputs(estimator),
        score_method=introspect.score_method(estimator, kind, has_proba),
        **env,
    )


def smoke_check(
    estimator: Any, meta: ModelMetadata, example: Sequence[Mapping[str, Any]] | None
) -> int:
    """Predict the example (or a row built from the signature) in this process; a model that
    cannot is refused with its own error, in one line. Returns how many values it predicted
    per row (what the registry records as n_outputs)."""
    from mlserve.runtime.model import LoadedModel

    try:
        model = LoadedModel(estimator, meta)
        if example:
            rows = [_example_input(model, row, f"example[{i}]") for i, row in enumerate(example)]
        else:
            rows = [model.sample_input()]
        answers = model.predict(rows)
    except MlserveError as exc:
        raise InvalidModelError(
            f"the model cannot predict {'its example' if example else 'a sample row'}: "
            f"{exc.message}; fix the model or the example, or pass --no-check to skip this"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the model's own code can raise anything: refuse it
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InvalidModelError(
            f"the model cannot predict {'its example' if example else 'a sample row'}: "
            f"{type(exc).__name__}: {first[:300]}; pass --no-check to register it anyway "
            "(for a model that cannot run on this host)"
        ) from None
    label = answers[0].label
    if meta.task == "tabular-multilabel":
        return meta.n_outputs  # the outputs that are on: not a width
    return len(label) if isinstance(label, list) else 1


def _example_input(model: Any, row: Mapping[str, Any], field: str) -> Any:
    if model.is_text:
        return model.prepare(text=row.get("text"), field=f"{field}.text")
    if model.feature_names:
        return model.prepare(features=dict(row), field=field)
    return model.prepare(features=list(row.values()), field=field)


def version_mismatch_warnings(meta: ModelMetadata) -> list[str]:
    """Say when a version was saved with another scikit-learn than the one running now."""
    import sklearn

    if meta.sklearn_version != sklearn.__version__:
        return [
            f"{meta.name}:{meta.version} was saved with scikit-learn {meta.sklearn_version} "
            f"and is loaded with scikit-learn {sklearn.__version__}; predictions may differ"
        ]
    return []
