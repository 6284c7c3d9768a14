"""A model's traffic configuration: A/B split and shadow (GET/PUT /api/models/{name}/traffic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples

__all__ = ["TrafficInfo", "TrafficUpdate"]


class TrafficUpdate(BaseModel):
    """A model's traffic configuration: an A/B split over versions and a shadow version."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": examples.TRAFFIC_UPDATE},
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
        json_schema_extra={"examples": examples.TRAFFIC_INFO},
    )

    model: str
    serving_version: int | None = Field(
        description="Version requests get without a split (what the model's alias points at)."
    )
    source: Literal["settings", "runtime"] | None = Field(
        description="Where the split and shadow come from: settings (traffic.splits, "
        "traffic.shadow) or an admin PUT on this server process; null when neither is set."
    )
