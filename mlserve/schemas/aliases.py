"""Moving and removing aliases (PUT / DELETE /api/models/{name}/aliases/{alias})."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples
from mlserve.schemas.common import INTEGRAL

__all__ = ["AliasChange", "AliasUpdate"]


class AliasUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": examples.ALIAS_UPDATE}
    )

    version: Annotated[int, Field(ge=1), INTEGRAL] = Field(
        description="The registered version the alias should name."
    )


class AliasChange(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.ALIAS_CHANGE})

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
