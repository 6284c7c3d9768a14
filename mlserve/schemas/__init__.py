"""The wire contract between server and clients (and the registry's metadata records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

TaskKind = Literal["text-classification", "tabular-classification", "tabular-regression"]
Label = str | int | float | bool

# Request ids in the OpenAPI examples, shaped like the server's (server.middleware.new_request_id).
_EXAMPLE_REQUEST_ID = "019ad0aa1b5c8e41f27a09d3b6c54a17"
_EXAMPLE_BATCH_ID = "019ad0aa21e73c9b5e0d74a2f8161bd9"


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
# Strict: "5.1" or true are not numbers (ints are accepted as floats).
Features = dict[str, StrictFloat | None] | list[StrictFloat | None]


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
                    "request_id": _EXAMPLE_REQUEST_ID,
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


class BatchPredictionItem(PredictionItem):
    # Optional so that this client still reads answers of servers without feedback ids.
    id: str | None = Field(
        default=None,
        description="This row's prediction id, `<request_id>-<index>` (always sent by this "
        "server): send it as `request_id` to POST /api/feedback with the row's true label.",
    )


class BatchPredictResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {
                            "id": f"{_EXAMPLE_BATCH_ID}-0",
                            "prediction": "positive",
                            "confidence": 0.88,
                            "probabilities": {"negative": 0.05, "neutral": 0.07, "positive": 0.88},
                        },
                        {
                            "id": f"{_EXAMPLE_BATCH_ID}-1",
                            "prediction": "negative",
                            "confidence": 0.79,
                            "probabilities": {"negative": 0.79, "neutral": 0.12, "positive": 0.09},
                        },
                        {
                            "id": f"{_EXAMPLE_BATCH_ID}-2",
                            "prediction": "neutral",
                            "confidence": 0.64,
                            "probabilities": {"negative": 0.14, "neutral": 0.64, "positive": 0.22},
                        },
                    ],
                    "model": "sentiment",
                    "version": 3,
                    "batch_size": 3,
                    "total_processing_time_ms": 2.4,
                    "request_id": _EXAMPLE_BATCH_ID,
                }
            ]
        },
    )

    predictions: list[BatchPredictionItem]
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
    status: Literal["loaded", "failed", "loading", "unloaded", "degraded"] = Field(
        description="degraded: the serving version fails fast after consecutive failed "
        "predictions (the reason is in `error`); unloaded: through the V2 repository API."
    )
    error: str | None = None


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "models": [
                        {
                            "name": "iris",
                            "task": "tabular-classification",
                            "versions": [1, 2],
                            "aliases": {"production": 2},
                            "serving_version": 2,
                            "loaded_versions": [2],
                            "status": "loaded",
                            "error": None,
                        },
                        {
                            "name": "sentiment",
                            "task": "text-classification",
                            "versions": [1, 2, 3, 4, 5],
                            "aliases": {"production": 3, "staging": 4},
                            "serving_version": 3,
                            "loaded_versions": [3, 4, 5],
                            "status": "loaded",
                            "error": None,
                        },
                    ],
                    "default_model": "sentiment",
                }
            ]
        },
    )

    models: list[ModelListItem]
    default_model: str | None


_IRIS_V2: dict[str, Any] = {
    "name": "iris",
    "version": 2,
    "created_at": "2025-11-21T14:02:51.208113Z",
    "source": "mlserve train",
    "description": "Iris species from sepal and petal measurements (cm).",
    "tags": {"dataset": "iris.csv"},
    "sha256": "c57522edd1ec1f815de333cc813cac871d9f05d6266a03afef95c6bc6eab092c",
    "size_bytes": 1071,
    "artifact": "model.joblib",
    "python_version": "3.12.7",
    "sklearn_version": "1.5.2",
    "joblib_version": "1.4.2",
    "estimator": "LogisticRegression",
    "task": "tabular-classification",
    "input_schema": {
        "kind": "tabular",
        "feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "n_features": 4,
    },
    "classes": ["setosa", "versicolor", "virginica"],
    "has_predict_proba": True,
    "metrics": {"accuracy": 0.9737, "macro_f1": 0.9733, "n_train": 112, "n_test": 38},
    "training": {
        "class_distribution": {"setosa": 0.3304, "versicolor": 0.3393, "virginica": 0.3304},
        "predicted_class_distribution": {
            "setosa": 0.3421,
            "versicolor": 0.3158,
            "virginica": 0.3421,
        },
        "mean_confidence": 0.9012,
    },
    "aliases": ["production"],
    "loaded": True,
    "loaded_at": "2025-11-29T16:58:12.640215Z",
    "warnings": [],
}


class VersionInfo(ModelMetadata):
    model_config = ConfigDict(json_schema_extra={"examples": [_IRIS_V2]})

    aliases: list[str]
    loaded: bool
    loaded_at: datetime | None
    warnings: list[str] = Field(default_factory=list)


class ModelInfo(VersionInfo):
    """The version a bare model name serves, plus the model's versions and aliases."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sentiment",
                    "version": 3,
                    "created_at": "2025-11-20T09:14:03.512204Z",
                    "source": "mlserve train",
                    "description": "Review sentiment: TF-IDF and logistic regression.",
                    "tags": {"dataset": "reviews.csv"},
                    "sha256": "e92c18b23fc013e799353d592d54cef9634fdde74128c627984a5cdb207aa4e7",
                    "size_bytes": 48213,
                    "artifact": "model.joblib",
                    "python_version": "3.12.7",
                    "sklearn_version": "1.5.2",
                    "joblib_version": "1.4.2",
                    "estimator": "Pipeline[TfidfVectorizer, LogisticRegression]",
                    "task": "text-classification",
                    "input_schema": {"kind": "text", "feature_names": None, "n_features": None},
                    "classes": ["negative", "neutral", "positive"],
                    "has_predict_proba": True,
                    "metrics": {
                        "accuracy": 0.8667,
                        "macro_f1": 0.8512,
                        "n_train": 60,
                        "n_test": 15,
                    },
                    "training": {
                        "class_distribution": {
                            "negative": 0.3333,
                            "neutral": 0.3333,
                            "positive": 0.3333,
                        },
                        "predicted_class_distribution": {
                            "negative": 0.3333,
                            "neutral": 0.2667,
                            "positive": 0.4,
                        },
                        "confidence_histogram": {
                            "edges": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                            "fractions": [0, 0, 0, 0, 0.0667, 0.1333, 0.2, 0.2667, 0.2, 0.1333],
                        },
                        "mean_confidence": 0.7421,
                    },
                    "aliases": ["production"],
                    "loaded": True,
                    "loaded_at": "2025-11-29T16:58:12.655031Z",
                    "warnings": [],
                    "versions": [1, 2, 3, 4, 5],
                    "all_aliases": {"production": 3, "staging": 4},
                }
            ]
        }
    )

    versions: list[int]
    all_aliases: dict[str, int]


class TrafficUpdate(BaseModel):
    """A model's traffic configuration: an A/B split over versions and a shadow version."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"split": {"3": 90, "4": 10}, "shadow": 5}]},
    )

    split: dict[str, float] | None = Field(
        default=None,
        description='Weight per version number, e.g. {"3": 90, "4": 10}; each client '
        "(X-Client-ID, else API key, else address) stays on one version. null: no split.",
    )
    shadow: int | None = Field(
        default=None,
        ge=1,
        description="Version sent a copy of live traffic off the request path; its answers "
        "are only compared (metrics), never returned. null: no shadow.",
    )


class TrafficInfo(TrafficUpdate):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model": "sentiment",
                    "split": {"3": 90, "4": 10},
                    "shadow": 5,
                    "serving_version": 3,
                    "source": "runtime",
                }
            ]
        },
    )

    model: str
    serving_version: int | None = Field(
        description="Version requests get without a split (what the model's alias points at)."
    )
    source: Literal["settings", "runtime"] | None = Field(
        description="Where the split and shadow come from: settings (traffic.splits, "
        "traffic.shadow) or an admin PUT on this server process; null when neither is set."
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "sentiment", "status": "reloaded", "previous_version": 3, "version": 4}
            ]
        }
    )

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


DependencyStatus = Literal["up", "down"]


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "healthy",
                    "version": "0.1.0",
                    "uptime_s": 5231.402,
                    "models": [
                        {
                            "name": "iris",
                            "version": 2,
                            "status": "healthy",
                            "latency_ms": 1.184,
                            "error": None,
                        },
                        {
                            "name": "sentiment",
                            "version": 3,
                            "status": "healthy",
                            "latency_ms": 2.051,
                            "error": None,
                        },
                    ],
                    "dependencies": {"redis": "up"},
                }
            ]
        }
    )

    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_s: float
    models: list[ModelHealth]
    dependencies: dict[str, DependencyStatus] = Field(
        default_factory=dict,
        description="Shared services the server uses (`redis` when redis.url is set) and "
        "whether they answer; one that is down makes a healthy server `degraded` (predictions "
        "go on without it).",
    )


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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "healthy",
                    "version": "0.1.0",
                    "uptime_s": 5231.402,
                    "models": [
                        {
                            "name": "iris",
                            "version": 2,
                            "status": "healthy",
                            "latency_ms": 1.184,
                            "error": None,
                            "loaded_at": "2025-11-29T16:58:12.640215Z",
                            "predictions": 1873,
                            "queue_depth": 0,
                        },
                        {
                            "name": "sentiment",
                            "version": 3,
                            "status": "healthy",
                            "latency_ms": 2.051,
                            "error": None,
                            "loaded_at": "2025-11-29T16:58:12.655031Z",
                            "predictions": 52410,
                            "queue_depth": 2,
                        },
                    ],
                    "dependencies": {"redis": "up"},
                    "process": {
                        "pid": 41872,
                        "cpu_percent": 23.5,
                        "cpu_seconds": 812.37,
                        "rss_bytes": 183500800,
                        "threads": 14,
                        "open_requests": 3,
                    },
                }
            ]
        }
    )

    models: list[DetailedModelHealth]  # type: ignore[assignment]
    process: ProcessInfo


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"ready": True, "models": {"iris": "loaded", "sentiment": "loaded"}}]
        }
    )

    ready: bool
    models: dict[str, Literal["loaded", "failed", "loading", "unloaded"]]


class LiveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"live": True}]})

    live: bool = True


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for humans.")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody


# ---------------------------------------------------------------------------- async jobs
# (POST /api/predict/async, /api/jobs/{job_id}: batch scoring in the background)
JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
JobKind = Literal["texts", "records"]


class AsyncPredictRequest(BaseModel):
    """One input or a batch, scored in the background: send exactly one of the input fields."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        # Read from JSON text by pydantic, which takes NaN / Infinity tokens; refused here as
        # on every other route (null is the missing value).
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"texts": ["Loved it", "Never again", "It arrived on Monday"]},
                {"records": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
                {"text": "Refund took three weeks.", "model": "sentiment@staging"},
            ]
        },
    )

    text: str | None = Field(default=None, description="One text (text models).")
    features: Features | None = Field(default=None, description="One feature row (tabular).")
    texts: list[str] | None = Field(default=None, description="Texts (text models).")
    records: list[Features] | None = Field(
        default=None, description="Feature rows (tabular models)."
    )
    model: str | None = Field(
        default=None,
        description="Model reference: name, name:VERSION or name@ALIAS. Default: the server's.",
    )
    model_version: int | str | None = Field(
        default=None, description="Version number or alias (compatibility; prefer 'model')."
    )


class JobProgress(BaseModel):
    done: int = Field(description="Inputs scored so far.")
    total: int = Field(description="Inputs in the job.")


class JobAccepted(BaseModel):
    """A job was stored and will be scored in the background."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "job_id": "6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
                    "status": "pending",
                    "status_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
                    "result_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817/result",
                    "model": "sentiment",
                    "version": 3,
                    "total": 3,
                    "created_at": "2025-11-29T17:30:00Z",
                }
            ]
        },
    )

    job_id: str
    status: JobStatus
    status_url: str
    result_url: str
    model: str = Field(description="Model the job is scored with.")
    version: int = Field(description="Version resolved at submission; every row uses it.")
    total: int
    created_at: datetime


class JobInfo(BaseModel):
    """Status, progress and timestamps of one job."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "job_id": "6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
                    "status": "running",
                    "model": "sentiment",
                    "version": 3,
                    "kind": "texts",
                    "progress": {"done": 1500, "total": 10000},
                    "created_at": "2025-11-29T17:30:00Z",
                    "started_at": "2025-11-29T17:30:00.2Z",
                    "finished_at": None,
                    "expires_at": None,
                    "error": None,
                    "status_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
                    "result_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817/result",
                }
            ]
        },
    )

    job_id: str
    status: JobStatus
    model: str
    version: int
    kind: JobKind = Field(description="texts (text model) or records (tabular model).")
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None = Field(description="When a worker first took the job.")
    finished_at: datetime | None = Field(description="When it completed, failed or was cancelled.")
    expires_at: datetime | None = Field(
        description="When a finished job and its results are deleted (jobs.ttl_s)."
    )
    error: str | None = Field(description="Why the job failed; null otherwise.")
    status_url: str
    result_url: str


class JobResultPage(BaseModel):
    """A page of a completed job's predictions, in input order."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "job_id": "6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
                    "model": "iris",
                    "version": 2,
                    "total": 3,
                    "offset": 0,
                    "limit": 2,
                    "next_offset": 2,
                    "predictions": [
                        {
                            "prediction": "setosa",
                            "confidence": 0.98,
                            "probabilities": {
                                "setosa": 0.98,
                                "versicolor": 0.02,
                                "virginica": 0.0,
                            },
                        },
                        {
                            "prediction": "virginica",
                            "confidence": 0.93,
                            "probabilities": {
                                "setosa": 0.0,
                                "versicolor": 0.07,
                                "virginica": 0.93,
                            },
                        },
                    ],
                }
            ]
        },
    )

    job_id: str
    model: str
    version: int
    total: int = Field(description="Predictions in the whole job.")
    offset: int = Field(description="Index of the first prediction on this page.")
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")
    predictions: list[PredictionItem] = Field(
        description="predictions[i] answers input offset + i."
    )


# ---------------------------------------------------------------------------- feedback and quality
# (POST /api/feedback, GET /api/models/{name}/quality: true labels sent after the fact, and the
# live accuracy and drift figures computed from them; see mlserve.feedback, mlserve.serving.drift)
FeedbackOutcome = Literal["accepted", "replaced", "unknown", "invalid"]
DriftState = Literal["stable", "moderate", "significant", "insufficient_data", "unavailable"]


class FeedbackItem(BaseModel):
    """The true label of one remembered prediction."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=200,
        description="The prediction's id: the request_id of a /api/predict answer, or the `id` "
        "of a /api/predict/batch row (`<request_id>-<index>`; V2 inference rows alike).",
    )
    label: Label = Field(
        description="The true label: one of the model's classes (its text is accepted too, "
        'e.g. "1" for class 1).'
    )


class FeedbackRequest(BaseModel):
    """One label (`request_id` and `label`) or several (`items`), not both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"request_id": _EXAMPLE_REQUEST_ID, "label": "positive"},
                {
                    "items": [
                        {"request_id": f"{_EXAMPLE_BATCH_ID}-1", "label": "negative"},
                        {"request_id": f"{_EXAMPLE_BATCH_ID}-2", "label": "neutral"},
                    ]
                },
            ]
        },
    )

    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    label: Label | None = None
    items: list[FeedbackItem] | None = Field(
        default=None, description="Several labels; the limit is feedback.max_items."
    )


class FeedbackResult(BaseModel):
    """What became of one label."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "request_id": _EXAMPLE_REQUEST_ID,
                    "outcome": "accepted",
                    "model": "sentiment",
                    "version": 3,
                    "predicted": "positive",
                    "label": "positive",
                    "correct": True,
                    "error": None,
                }
            ]
        },
    )

    request_id: str
    outcome: FeedbackOutcome = Field(
        description="accepted: the first label of this prediction; replaced: a later label "
        "replaced an earlier one (counted once); unknown: no prediction with this id is kept "
        "(never made, or older than feedback.retention_s); invalid: not a class of the model."
    )
    model: str | None = None
    version: int | None = None
    predicted: str | None = Field(default=None, description="The label the model predicted.")
    label: str | None = Field(default=None, description="The true label, as stored.")
    correct: bool | None = Field(default=None, description="Whether the prediction was right.")
    error: str | None = Field(default=None, description="Why the label was not stored.")


class FeedbackResponse(BaseModel):
    """Per-item results of a batch of labels, with counts by outcome."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "replaced": 0,
                    "unknown": 1,
                    "invalid": 0,
                    "items": [
                        {
                            "request_id": f"{_EXAMPLE_BATCH_ID}-1",
                            "outcome": "accepted",
                            "model": "sentiment",
                            "version": 3,
                            "predicted": "negative",
                            "label": "negative",
                            "correct": True,
                            "error": None,
                        },
                        {
                            "request_id": "019a1f3c0d2e4b7a9c81f05e36d2a4b8",
                            "outcome": "unknown",
                            "model": None,
                            "version": None,
                            "predicted": None,
                            "label": None,
                            "correct": None,
                            "error": "no prediction with id '019a1f3c0d2e4b7a9c81f05e36d2a4b8' "
                            "is kept (unknown, or older than feedback.retention_s = 604800 s)",
                        },
                    ],
                }
            ]
        },
    )

    accepted: int
    replaced: int
    unknown: int
    invalid: int
    items: list[FeedbackResult] = Field(description="items[i] answers the request's items[i].")


class LiveFigures(BaseModel):
    """Accuracy and macro-F1 of labelled predictions (null when there are none)."""

    labelled: int = Field(description="Labelled predictions counted.")
    correct: int
    accuracy: float | None
    macro_f1: float | None = Field(
        description="Mean F1 over the classes that occur among the true or predicted labels."
    )


class RollingFigures(LiveFigures):
    window: int = Field(description="N: the figures cover the last N labelled predictions.")


class ConfusionMatrix(BaseModel):
    labels: list[str]
    matrix: list[list[int]] = Field(
        description="matrix[i][j]: predictions of labels[j] whose true label is labels[i] "
        "(rows true, columns predicted), over the rolling window."
    )


class ClassDrift(BaseModel):
    label: str
    training: float = Field(description="Share of the hold-out set's predictions.")
    live: float = Field(description="Share of the recent predictions.")
    psi: float = Field(description="This class's term of the PSI (>= 0).")


class ConfidenceDrift(BaseModel):
    edges: list[float] = Field(description="Bin edges of the confidence histogram.")
    training: list[float] = Field(description="Share of hold-out predictions per bin.")
    live: list[float] = Field(description="Share of recent predictions per bin.")
    psi: float


class DriftReport(BaseModel):
    """Recent predictions against the hold-out set's (population stability index, PSI)."""

    status: DriftState = Field(
        description="By the predicted-class PSI: stable < 0.1 <= moderate < 0.25 <= "
        "significant; insufficient_data below feedback.drift_min_predictions recent "
        "predictions; unavailable without hold-out figures in the registry."
    )
    reason: str | None = None
    predictions: int = Field(description="Recent predictions compared.")
    window_s: float = Field(
        description="Those of the last window_s seconds (feedback.drift_window_s; whole minutes)."
    )
    psi: float | None = Field(description="PSI of the predicted-class distribution.")
    classes: list[ClassDrift] = Field(default_factory=list)
    confidence: ConfidenceDrift | None = Field(
        default=None, description="PSI of the confidence histogram (models with probabilities)."
    )
    live_mean_confidence: float | None = None


class TrainingFigures(BaseModel):
    """What the registry recorded at training time, on the hold-out set (null when absent)."""

    accuracy: float | None = None
    macro_f1: float | None = None
    n_test: int | None = None
    class_distribution: dict[str, float] | None = None
    predicted_class_distribution: dict[str, float] | None = None
    confidence_histogram: dict[str, list[float]] | None = None
    mean_confidence: float | None = None


class VersionQuality(BaseModel):
    version: int
    serving: bool = Field(description="Whether a bare model name is answered by this version.")
    predictions: int = Field(
        description="Predictions made within feedback.retention_s (counted per minute)."
    )
    feedback: int = Field(description="Remembered predictions that have a true label.")
    rolling: RollingFigures
    windows: dict[str, LiveFigures] = Field(
        description="Labelled predictions made in the last 1h, 24h and 7d (within retention)."
    )
    confusion_matrix: ConfusionMatrix
    drift: DriftReport
    training: TrainingFigures


class QualityReport(BaseModel):
    """Live quality of a model's versions, next to their training-time figures."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model": "sentiment",
                    "window": 1000,
                    "retention_s": 604800.0,
                    "versions": [
                        {
                            "version": 3,
                            "serving": True,
                            "predictions": 52410,
                            "feedback": 412,
                            "rolling": {
                                "labelled": 412,
                                "correct": 351,
                                "accuracy": 0.8519,
                                "macro_f1": 0.8492,
                                "window": 1000,
                            },
                            "windows": {
                                "1h": {
                                    "labelled": 38,
                                    "correct": 33,
                                    "accuracy": 0.8684,
                                    "macro_f1": 0.8611,
                                },
                                "24h": {
                                    "labelled": 290,
                                    "correct": 248,
                                    "accuracy": 0.8552,
                                    "macro_f1": 0.8523,
                                },
                                "7d": {
                                    "labelled": 412,
                                    "correct": 351,
                                    "accuracy": 0.8519,
                                    "macro_f1": 0.8492,
                                },
                            },
                            "confusion_matrix": {
                                "labels": ["negative", "neutral", "positive"],
                                "matrix": [[118, 12, 6], [9, 97, 14], [5, 15, 136]],
                            },
                            "drift": {
                                "status": "stable",
                                "reason": None,
                                "predictions": 9130,
                                "window_s": 86400.0,
                                "psi": 0.0155,
                                "classes": [
                                    {
                                        "label": "negative",
                                        "training": 0.3333,
                                        "live": 0.29,
                                        "psi": 0.006,
                                    },
                                    {
                                        "label": "neutral",
                                        "training": 0.2667,
                                        "live": 0.25,
                                        "psi": 0.0011,
                                    },
                                    {
                                        "label": "positive",
                                        "training": 0.4,
                                        "live": 0.46,
                                        "psi": 0.0084,
                                    },
                                ],
                                "confidence": {
                                    "edges": [
                                        0.0,
                                        0.1,
                                        0.2,
                                        0.3,
                                        0.4,
                                        0.5,
                                        0.6,
                                        0.7,
                                        0.8,
                                        0.9,
                                        1.0,
                                    ],
                                    "training": [
                                        0,
                                        0,
                                        0,
                                        0,
                                        0.0667,
                                        0.1333,
                                        0.2,
                                        0.2667,
                                        0.2,
                                        0.1333,
                                    ],
                                    "live": [0, 0, 0, 0, 0.09, 0.12, 0.19, 0.27, 0.21, 0.12],
                                    "psi": 0.0108,
                                },
                                "live_mean_confidence": 0.7388,
                            },
                            "training": {
                                "accuracy": 0.8667,
                                "macro_f1": 0.8512,
                                "n_test": 15,
                                "class_distribution": {
                                    "negative": 0.3333,
                                    "neutral": 0.3333,
                                    "positive": 0.3333,
                                },
                                "predicted_class_distribution": {
                                    "negative": 0.3333,
                                    "neutral": 0.2667,
                                    "positive": 0.4,
                                },
                                "confidence_histogram": {
                                    "edges": [
                                        0.0,
                                        0.1,
                                        0.2,
                                        0.3,
                                        0.4,
                                        0.5,
                                        0.6,
                                        0.7,
                                        0.8,
                                        0.9,
                                        1.0,
                                    ],
                                    "fractions": [
                                        0,
                                        0,
                                        0,
                                        0,
                                        0.0667,
                                        0.1333,
                                        0.2,
                                        0.2667,
                                        0.2,
                                        0.1333,
                                    ],
                                },
                                "mean_confidence": 0.7421,
                            },
                        }
                    ],
                }
            ]
        },
    )

    model: str
    window: int = Field(description="N of the rolling figures.")
    retention_s: float
    versions: list[VersionQuality]


# ---------------------------------------------------------------------------- aliases
# (PUT / DELETE /api/models/{name}/aliases/{alias}, mlserve/server/routes/aliases.py)
class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 4}]})

    version: int = Field(ge=1, description="The registered version the alias should name.")


class AliasChange(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sentiment",
                    "alias": "production",
                    "version": 4,
                    "previous_version": 3,
                    "serving_version": 4,
                    "reload_error": None,
                }
            ]
        }
    )

    name: str
    alias: str
    version: int | None = Field(description="What the alias names now (null: removed).")
    previous_version: int | None = Field(description="What it named before (null: new alias).")
    serving_version: int | None = Field(
        description="The version this replica serves for the model after the change (null: "
        "the model is not served here). Other replicas follow within traffic.watch_interval_s."
    )
    reload_error: str | None = Field(
        default=None,
        description="Set when this replica could not load the new version: the alias is "
        "changed, the previous version keeps serving here.",
    )
