"""Requests and answers of the prediction API (POST /api/predict, /api/predict/batch)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from mlserve.schemas import examples
from mlserve.schemas.common import (
    NOT_BLANK,
    NOT_EMPTY,
    Features,
    JsonInt,
    Label,
    any_of,
    exactly_one_of,
)

__all__ = [
    "BatchPredictRequest",
    "BatchPredictResponse",
    "BatchPredictionItem",
    "PredictRequest",
    "PredictResponse",
    "PredictionItem",
    "Text",
]

PREDICTION_DOC = (
    "Predicted class; for regression the value (a list of values for multi-output models); "
    "for multilabel models the list of outputs that are on; for anomaly detectors 1 (inlier) "
    "or -1 (outlier); for clusterers the cluster id."
)
SCORES_DOC = (
    "Raw scores of models without probabilities (else null): decision_function per class "
    "(binary: the positive class only), or an anomaly detector's score_samples."
)

# A text as the runtime takes it (not empty, not whitespace only), said in the schema.
Text = Annotated[str, WithJsonSchema(NOT_BLANK)]


class PredictRequest(BaseModel):
    """One input: `text` for text models, `features` for tabular models."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        protected_namespaces=(),
        json_schema_extra={
            "examples": examples.PREDICT_REQUEST,
            **any_of(text=None, features=None),
        },
    )

    text: Text | None = Field(default=None, description="Input text (text models).")
    features: Features | None = Field(
        default=None,
        description="Feature values by name, or a list in the model's feature order (tabular).",
    )
    model: str | None = Field(
        default=None,
        description="Model reference: name, name:VERSION or name@ALIAS. Default: the server's.",
    )
    model_version: JsonInt | str | None = Field(
        default=None,
        description="Version number or alias of the model (compatibility; prefer 'model').",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.PREDICT_RESPONSE},
    )

    prediction: Label | list[Label] = Field(description=PREDICTION_DOC)
    confidence: float | None = Field(
        description="Highest class probability; null when the model has no predict_proba."
    )
    probabilities: dict[str, float] | None = Field(
        description="Probability per class; null when the model has no predict_proba."
    )
    scores: dict[str, float] | None = Field(default=None, description=SCORES_DOC)
    model: str
    version: int
    processing_time_ms: float
    request_id: str


class BatchPredictRequest(BaseModel):
    """Several inputs scored in one vectorized model call."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        protected_namespaces=(),
        json_schema_extra={
            "examples": examples.BATCH_PREDICT_REQUEST,
            **exactly_one_of(texts=NOT_EMPTY, records=NOT_EMPTY),
        },
    )

    texts: list[Text] | None = Field(default=None, description="Texts (text models).")
    records: list[Features] | None = Field(
        default=None, description="Feature rows (tabular models)."
    )
    model: str | None = None
    model_version: JsonInt | str | None = None


class PredictionItem(BaseModel):
    prediction: Label | list[Label] = Field(description=PREDICTION_DOC)
    confidence: float | None
    probabilities: dict[str, float] | None
    scores: dict[str, float] | None = Field(default=None, description=SCORES_DOC)


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
        json_schema_extra={"examples": examples.BATCH_PREDICT_RESPONSE},
    )

    predictions: list[BatchPredictionItem]
    model: str
    version: int
    batch_size: int
    total_processing_time_ms: float
    request_id: str
