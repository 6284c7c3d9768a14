"""What the registry records about a model, and the model-management answers built on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples
from mlserve.schemas.common import Label, TaskKind

__all__ = [
    "ColumnSpec",
    "ColumnType",
    "InputSchema",
    "LoadedVersion",
    "ModelInfo",
    "ModelList",
    "ModelListItem",
    "ModelMetadata",
    "ModelSummary",
    "ReloadResponse",
    "VersionInfo",
    "VersionSummary",
]


ColumnType = Literal["float", "int", "bool", "str", "category"]


class ColumnSpec(BaseModel):
    """One column of a tabular model's typed signature."""

    name: str
    dtype: ColumnType = Field(
        description="float, int, bool, str, or category (a str or number from a known set)."
    )
    nullable: bool = Field(
        default=False,
        description="Missing values are expected: seen in the training data or example, or "
        "imputed by the model. null is sent to the model for any column; a model that cannot "
        "take it answers 422.",
    )
    categories: list[Label] | None = Field(
        default=None,
        description="The values seen (category columns only accept these; str columns list "
        "what the model's encoder knows, when it records it).",
    )


class InputSchema(BaseModel):
    """What a model takes: free text, or a row of typed features."""

    kind: Literal["text", "tabular"]
    feature_names: list[str] | None = None
    n_features: int | None = None
    columns: list[ColumnSpec] | None = Field(
        default=None, description="The typed signature, one entry per feature, in order."
    )
    dataframe: bool = Field(
        default=False,
        description="The model was fitted on a pandas DataFrame and is given one per batch "
        "(named, typed columns); otherwise a float matrix.",
    )
    notes: list[str] = Field(
        default_factory=list, description="What could not be inferred about the inputs."
    )


class ModelMetadata(BaseModel):
    """Everything the registry records about one model version."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: int
    created_at: datetime
    source: str = Field(description="Where the artifact came from (a path, or 'mlserve train').")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    sha256: str
    size_bytes: int
    artifact: str = "model.joblib"
    format: Literal["joblib", "skops", "onnx", "mlflow"] = Field(
        default="joblib", description="How the artifact is stored and loaded."
    )
    format_details: dict[str, Any] = Field(
        default_factory=dict,
        description="What the format needs to load the artifact again (trusted skops types, "
        "an MLflow run id, ONNX tensor names).",
    )
    python_version: str
    sklearn_version: str
    joblib_version: str
    estimator: str = Field(description="Class of the estimator (the final step for a pipeline).")
    task: TaskKind
    input_schema: InputSchema
    classes: list[Label] | None = None
    has_predict_proba: bool = False
    n_outputs: int = Field(
        default=1, description="Values predicted per row (multi-output regression, multilabel)."
    )
    score_method: Literal["decision_function", "score_samples"] | None = Field(
        default=None,
        description="The method behind `scores` (models without probabilities), if any.",
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="Hold-out figures kept for drift checks (class distribution, confidences).",
    )


class VersionSummary(BaseModel):
    version: int
    created_at: datetime
    aliases: list[str]
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]


class ModelSummary(BaseModel):
    name: str
    task: TaskKind | None = Field(description="None when the latest metadata cannot be read.")
    latest_version: int
    versions: list[int]
    aliases: dict[str, int]
    error: str | None = Field(
        default=None,
        description="Why the model is broken (a registry file that cannot be read), in one "
        "line; None for a healthy model.",
    )


class LoadedVersion(BaseModel):
    version: int
    loaded_at: datetime
    predictions: int


class ModelListItem(BaseModel):
    name: str
    task: TaskKind | None
    versions: list[int]
    aliases: dict[str, int]
    serving_version: int | None = Field(description="Version answering requests by default.")
    loaded_versions: list[int]
    status: Literal["loaded", "failed", "loading", "unloaded", "degraded"] = Field(
        description="degraded: the serving version fails fast after consecutive failed "
        "predictions (the reason is in `error`); unloaded: through the V2 repository API."
    )
    error: str | None = None


class ModelList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.MODEL_LIST})

    models: list[ModelListItem]
    default_model: str | None


class VersionInfo(ModelMetadata):
    model_config = ConfigDict(json_schema_extra={"examples": examples.VERSION_INFO})

    aliases: list[str]
    loaded: bool
    loaded_at: datetime | None
    warnings: list[str] = Field(default_factory=list)


class ModelInfo(VersionInfo):
    """The version a bare model name serves, plus the model's versions and aliases."""

    model_config = ConfigDict(json_schema_extra={"examples": examples.MODEL_INFO})

    versions: list[int]
    all_aliases: dict[str, int]


class ReloadResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.RELOAD_RESPONSE})

    name: str
    status: Literal["reloaded", "unchanged"]
    previous_version: int | None
    version: int
