"""A model's traffic configuration: A/B split and shadow (GET/PUT /api/models/{name}/traffic)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from mlserve.schemas import examples
from mlserve.schemas.common import INTEGRAL

__all__ = [
    "MAX_SPLIT_VERSIONS",
    "MAX_SPLIT_WEIGHT",
    "SplitWeights",
    "TrafficInfo",
    "TrafficUpdate",
]

MAX_SPLIT_VERSIONS = 10  # as mlserve.serving.traffic's (a test pins it)
# Weights are relative shares; bounded so that no sum of them overflows a double.
MAX_SPLIT_WEIGHT = 1e9
# What mlserve.serving.traffic.Split.parse checks, said in the schema: 1 to MAX_SPLIT_VERSIONS
# version numbers (surrounding whitespace and leading zeros are read too), weights >= 0 and
# not all 0.
SPLIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": r"^\s*0*[1-9][0-9]*\s*$"},
    "additionalProperties": {"type": "number", "minimum": 0, "maximum": MAX_SPLIT_WEIGHT},
    "minProperties": 1,
    "maxProperties": MAX_SPLIT_VERSIONS,
    "not": {"additionalProperties": {"maximum": 0}},
}
SplitWeights = Annotated[
    dict[str, Annotated[float, Field(ge=0, le=MAX_SPLIT_WEIGHT)]], WithJsonSchema(SPLIT_SCHEMA)
]


class TrafficUpdate(BaseModel):
    """A model's traffic configuration: an A/B split over versions and a shadow version."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.TRAFFIC_UPDATE},
    )

    split: SplitWeights | None = Field(
        default=None,
        description='Weight per version number, e.g. {"3": 90, "4": 10} (0 to 1e9, not all 0); '
        "each client (X-Client-ID, else API key, else address) stays on one version. null: no "
        "split.",
    )
    shadow: Annotated[int, Field(ge=1), INTEGRAL] | None = Field(
        default=None,
        description="Version sent a copy of live traffic off the request path; its answers "
        "are only compared (metrics), never returned. null: no shadow.",
    )


class TrafficInfo(TrafficUpdate):
    model_config = ConfigDict(
        strict=False,  # built by the server, not read from a client
        protected_namespaces=(),
        json_schema_extra={"examples": examples.TRAFFIC_INFO},
    )

    model: str
    serving_version: int | None = Field(
        description="Version requests get without a split (what the model's alias points at)."
    )
    source: Literal["settings", "runtime", "rollout"] | None = Field(
        description="Where the split and shadow come from: settings (traffic.splits, "
        "traffic.shadow), an admin PUT on this server process, or a running rollout (its split); "
        "null when none is set."
    )
