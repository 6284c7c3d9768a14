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


# ---------------------------------------------------------------------------- prediction API
Features = dict[str, float | None] | list[float | None]


class PredictRequest(BaseModel):
    """One input: `text` for text models, `features` for tabular models."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {"text": "The delivery was fast and the staff were lovely."},
                {"text": "Refund took three weeks.", "model": "sentiment@staging"},
                {
                    "features": {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    },
                    "model": "iris",
                },
            ]
        },
    )

    text: str | None = Field(default=None, description="Input text (text models).")
    features: Features | None = Field(
        default=None,
        description="Feature values by name, or a list in the model's feature order (tabular).",
    )
    model: str | None = Field(
        default=None,
        description="Model reference: name, name:VERSION or name@ALIAS. Default: the server's.",
    )
    model_version: int | str | None = Field(
        default=None,
        description="Version number or alias of the model (compatibility; prefer 'model').",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "prediction": "positive",
                    "confidence": 0.91,
                    "probabilities": {"negative": 0.04, "neutral": 0.05, "positive": 0.91},
                    "model": "sentiment",
                    "version": 3,
                    "processing_time_ms": 1.7,
                    "request_id": "0b5f8a9e6f1e4a43",
                }
            ]
        },
    )

    prediction: Label = Field(description="Predicted class (or value, for regression).")
    confidence: float | None = Field(
        description="Highest class probability; null when the model has no predict_proba."
    )
    probabilities: dict[str, float] | None = Field(
        description="Probability per class; null when the model has no predict_proba."
    )
    model: str
    version: int
    processing_time_ms: float
    request_id: str


class BatchPredictRequest(BaseModel):
    """Several inputs scored in one vectorized model call."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {"texts": ["Loved it", "Never again", "It arrived on Monday"]},
                {"records": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
            ]
        },
    )

    texts: list[str] | None = Field(default=None, description="Texts (text models).")
    records: list[Features] | None = Field(
        default=None, description="Feature rows (tabular models)."
    )
    model: str | None = None
    model_version: int | str | None = None


class PredictionItem(BaseModel):
    prediction: Label
    confidence: float | None
    probabilities: dict[str, float] | None


class BatchPredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    predictions: list[PredictionItem]
    model: str
    version: int
    batch_size: int
    total_processing_time_ms: float
    request_id: str


# ---------------------------------------------------------------------------- models and health
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
    status: Literal["loaded", "failed", "loading"]
    error: str | None = None


class ModelList(BaseModel):
    models: list[ModelListItem]
    default_model: str | None


class VersionInfo(ModelMetadata):
    aliases: list[str]
    loaded: bool
    loaded_at: datetime | None
    warnings: list[str] = Field(default_factory=list)


class ModelInfo(VersionInfo):
    """The version a bare model name serves, plus the model's versions and aliases."""

    versions: list[int]
    all_aliases: dict[str, int]


class ReloadResponse(BaseModel):
    name: str
    status: Literal["reloaded", "unchanged"]
    previous_version: int | None
    version: int


class ModelHealth(BaseModel):
    name: str
    version: int | None
    status: Literal["healthy", "degraded"]
    latency_ms: float | None = None
    error: str | None = None


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_s: float
    models: list[ModelHealth]


class DetailedModelHealth(ModelHealth):
    loaded_at: datetime | None = None
    predictions: int = 0
    queue_depth: int = 0


class ProcessInfo(BaseModel):
    pid: int
    cpu_percent: float
    cpu_seconds: float
    rss_bytes: int
    threads: int
    open_requests: int


class DetailedHealthResponse(HealthResponse):
    models: list[DetailedModelHealth]  # type: ignore[assignment]
    process: ProcessInfo


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, Literal["loaded", "failed", "loading"]]


class LiveResponse(BaseModel):
    live: bool = True


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for humans.")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody
