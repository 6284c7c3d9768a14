"""The wire contract between server and clients (and the registry's metadata records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskKind = Literal["text-classification", "tabular-classification", "tabular-regression"]
Label = str | int | float | bool


class InputSchema(BaseModel):
    """What a model takes: free text, or a row of numeric features."""

    kind: Literal["text", "tabular"]
    feature_names: list[str] | None = None
    n_features: int | None = None


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
    python_version: str
    sklearn_version: str
    joblib_version: str
    estimator: str = Field(description="Class of the estimator (the final step for a pipeline).")
    task: TaskKind
    input_schema: InputSchema
    classes: list[Label] | None = None
    has_predict_proba: bool = False
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
    task: TaskKind
    latest_version: int
    versions: list[int]
    aliases: dict[str, int]
