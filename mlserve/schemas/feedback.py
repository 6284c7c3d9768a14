"""True labels sent after the fact, and the live quality and drift computed from them."""

# (POST /api/feedback, GET /api/models/{name}/quality; see mlserve.feedback, mlserve.serving.drift)

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples
from mlserve.schemas.common import NOT_EMPTY, Label

__all__ = [
    "ClassDrift",
    "ConfidenceDrift",
    "ConfusionMatrix",
    "DriftReport",
    "DriftState",
    "FeedbackItem",
    "FeedbackOutcome",
    "FeedbackRequest",
    "FeedbackResponse",
    "FeedbackResult",
    "LiveFigures",
    "QualityReport",
    "RollingFigures",
    "TrainingFigures",
    "VersionQuality",
]

FeedbackOutcome = Literal["accepted", "replaced", "unknown", "invalid"]
DriftState = Literal["stable", "moderate", "significant", "insufficient_data", "unavailable"]


class FeedbackItem(BaseModel):
    """The true label of one remembered prediction."""

    model_config = ConfigDict(extra="forbid", strict=True)

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
        strict=True,
        json_schema_extra={
            "examples": examples.FEEDBACK_REQUEST,
            # What the route checks itself: request_id and label, or items, never both.
            "oneOf": [
                {
                    "required": ["request_id", "label"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "label": {"not": {"type": "null"}},
                        "items": {"type": "null"},
                    },
                },
                {
                    "required": ["items"],
                    "properties": {
                        "items": NOT_EMPTY,
                        "request_id": {"type": "null"},
                        "label": {"type": "null"},
                    },
                },
            ],
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
        json_schema_extra={"examples": examples.FEEDBACK_RESULT},
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
        json_schema_extra={"examples": examples.FEEDBACK_RESPONSE},
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
        json_schema_extra={"examples": examples.QUALITY_REPORT},
    )

    model: str
    window: int = Field(description="N of the rolling figures.")
    retention_s: float
    versions: list[VersionQuality]
