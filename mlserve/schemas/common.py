"""Types every area of the wire contract shares: labels, tasks, feature rows, the error shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

__all__ = [
    "INTEGRAL",
    "NOT_BLANK",
    "NOT_EMPTY",
    "ErrorBody",
    "ErrorResponse",
    "FeatureValue",
    "Features",
    "JsonInt",
    "Label",
    "TaskKind",
    "any_of",
    "exactly_one_of",
]

TaskKind = Literal[
    "text-classification",
    "tabular-classification",
    "tabular-regression",
    "tabular-multilabel",
    "anomaly-detection",
    "clustering",
]
Label = str | int | float | bool
# Strict JSON types, checked against the model's signature by the runtime: "5.1" is a string
# (a 422 for a float column), true a boolean, 4 an integer (a float column takes it as 4.0).
# An integer beyond 64 bits is read as the float it is near (as JSON numbers always were).
FeatureValue = (
    Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
    | StrictFloat
    | StrictBool
    | StrictStr
    | None
)
Features = dict[str, FeatureValue] | list[FeatureValue]


def _integral(value: Any) -> Any:
    return int(value) if type(value) is float and value.is_integer() else value


# An integer of a strictly read request is 4 or 4.0 (the same JSON Schema integer), never "4",
# 4.5 or true: Annotated[int, <constraints>, INTEGRAL] (after the constraints, which then reach
# the JSON Schema), or JsonInt.
INTEGRAL = BeforeValidator(_integral)
JsonInt = Annotated[int, INTEGRAL]
# JSON Schema of a text the runtime accepts: not empty, not whitespace only (the regex's \s is
# str.isspace's whitespace).
NOT_BLANK: dict[str, Any] = {"type": "string", "pattern": r"\S"}
NOT_NULL: dict[str, Any] = {"not": {"type": "null"}}
NOT_EMPTY: dict[str, Any] = {"type": "array", "minItems": 1}


def exactly_one_of(**fields: dict[str, Any] | None) -> dict[str, Any]:
    """JSON Schema of what a route checks itself: exactly one of `fields` is given (present,
    not null, and matching its schema when one is named); the others are absent or null."""
    return {
        "oneOf": [
            {
                "required": [name],
                "properties": {
                    name: schema or NOT_NULL,
                    **{other: {"type": "null"} for other in fields if other != name},
                },
            }
            for name, schema in fields.items()
        ]
    }


def any_of(**fields: dict[str, Any] | None) -> dict[str, Any]:
    """JSON Schema of what a route checks itself: at least one of `fields` is given (present,
    not null, and matching its schema when one is named)."""
    return {
        "anyOf": [
            {"required": [name], "properties": {name: schema or NOT_NULL}}
            for name, schema in fields.items()
        ]
    }


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for humans.")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody
