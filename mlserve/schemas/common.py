"""Types every area of the wire contract shares: labels, tasks, feature rows, the error shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictFloat

__all__ = ["ErrorBody", "ErrorResponse", "Features", "Label", "TaskKind"]

TaskKind = Literal["text-classification", "tabular-classification", "tabular-regression"]
Label = str | int | float | bool
# Strict: "5.1" or true are not numbers (ints are accepted as floats).
Features = dict[str, StrictFloat | None] | list[StrictFloat | None]


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for humans.")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody
