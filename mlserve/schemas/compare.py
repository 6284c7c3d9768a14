"""Requests and answers of POST /api/predict/compare: several models asked about one input."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic_core import PydanticCustomError

from mlserve.schemas.common import NOT_BLANK, ErrorBody, Features, Label, exactly_one_of
from mlserve.schemas.predict import PREDICTION_DOC, SCORES_DOC, Text

__all__ = [
    "MAX_COMPARE_MODELS",
    "CompareError",
    "CompareRequest",
    "CompareResponse",
    "CompareResult",
]

MAX_COMPARE_MODELS = 10
"""How many models one comparison may ask (each is a prediction of its own)."""

# Request ids shaped like the server's (server.ids.RequestIds).
_REQUEST_ID = "019ad0aa2c4b7e1f93d0a5b8e6c71f02"

COMPARE_REQUEST: list[JsonValue] = [
    {
        "text": "The delivery was fast and the staff were lovely.",
        "models": ["sentiment", "sentiment@staging", "sentiment@canary"],
    },
    {
        "features": {
            "sepal_length": 5.1,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
        },
        "models": ["iris", "iris_forest"],
    },
]

COMPARE_RESPONSE: list[JsonValue] = [
    {
        "results": [
            {
                "model": "sentiment",
                "version": 3,
                "prediction": "positive",
                "confidence": 0.91,
                "probabilities": {"negative": 0.04, "neutral": 0.05, "positive": 0.91},
                "scores": None,
                "processing_time_ms": 1.7,
                "id": f"{_REQUEST_ID}-0",
            },
            {
                "model": "sentiment@staging",
                "version": 4,
                "prediction": "positive",
                "confidence": 0.87,
                "probabilities": {"negative": 0.06, "neutral": 0.07, "positive": 0.87},
                "scores": None,
                "processing_time_ms": 2.1,
                "id": f"{_REQUEST_ID}-1",
            },
            {
                "model": "sentiment@canary",
                "error": {
                    "code": "model_not_found",
                    "message": "model 'sentiment' has no alias 'canary'",
                    "request_id": _REQUEST_ID,
                },
            },
        ],
        "request_id": _REQUEST_ID,
    }
]


class CompareRequest(BaseModel):
    """One input (`text` or `features`) for several models, each answering on its own."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        protected_namespaces=(),
        json_schema_extra={
            "examples": COMPARE_REQUEST,
            **exactly_one_of(text=NOT_BLANK, features=None),
        },
    )

    text: Text | None = Field(default=None, description="Input text (text models).")
    features: Features | None = Field(
        default=None,
        description="Feature values by name, or a list in the model's feature order (tabular).",
    )
    models: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        max_length=MAX_COMPARE_MODELS,
        description="The models to ask, each named once: name, name:VERSION or name@ALIAS "
        f"(1 to {MAX_COMPARE_MODELS}). The results come in this order.",
        json_schema_extra={"uniqueItems": True},
    )

    @field_validator("models")
    @classmethod
    def _each_model_once(cls, models: list[str]) -> list[str]:
        seen: set[str] = set()
        for reference in models:
            if reference in seen:
                raise PydanticCustomError(
                    "duplicate_reference",
                    "'{reference}' is asked twice; name each model once",
                    {"reference": reference},
                )
            seen.add(reference)
        return models


class CompareResult(BaseModel):
    """One model's answer."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="The model reference as asked (name, name:3, name@alias).")
    version: int = Field(description="The version that answered.")
    prediction: Label | list[Label] = Field(description=PREDICTION_DOC)
    confidence: float | None = Field(
        description="Highest class probability; null when the model has no predict_proba."
    )
    probabilities: dict[str, float] | None = Field(
        description="Probability per class; null when the model has no predict_proba."
    )
    scores: dict[str, float] | None = Field(default=None, description=SCORES_DOC)
    processing_time_ms: float = Field(description="This model's time, choice and prediction.")
    # Optional so that this client still reads answers of servers without feedback ids.
    id: str | None = Field(
        default=None,
        description="This answer's prediction id, `<request_id>-<index>` (index in `models`): "
        "send it as `request_id` to POST /api/feedback with the true label.",
    )


class CompareError(BaseModel):
    """One model that could not answer: unknown (404), the input does not fit it (422), it
    failed (500) or is not loaded (503). The other models' answers are unaffected."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="The model reference as asked.")
    error: ErrorBody


class CompareResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": COMPARE_RESPONSE})

    results: list[CompareResult | CompareError] = Field(
        description="One item per model, in the order asked: an answer, or that model's error."
    )
    request_id: str
