"""Alias routes (admin): point an alias of a model at a version, or remove it, through the API.

The registry on disk is changed, so every replica sharing it picks the change up with its
watcher (`traffic.watch_interval_s`); the replica that took the request reloads at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Path

from mlserve.errors import MlserveError
from mlserve.schemas import AliasChange, AliasUpdate, ErrorResponse
from mlserve.server.deps import ManagerDep
from mlserve.server.jsonbody import JSONRoute
from mlserve.serving.manager import ModelManager

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/models", tags=["models"], route_class=JSONRoute)

NameParam = Path(description="Model name.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AliasParam = Path(
    description="Alias: lowercase letters, digits, '_' or '-' (not only digits).",
    # The registry's rule (mlserve.registry.validate_alias), said in the schema.
    pattern=r"^[a-z0-9_-]*[a-z_-][a-z0-9_-]*$",
    max_length=64,
    examples=["production"],
)
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Model, version or alias not found."},
    422: {"model": ErrorResponse, "description": "Invalid alias or version."},
}


async def _follow(manager: ModelManager, name: str) -> tuple[int | None, str | None]:
    """Reload the model on this replica if it serves it: (serving version, error)."""
    served = manager.models.get(name)
    if served is None:
        return None, None
    try:
        outcome = await manager.reload(name)
    except MlserveError as exc:
        log.warning("alias of %s changed, but reloading it failed: %s", name, exc)
        current = served.current.version if served.current is not None else None
        return current, str(exc)
    return outcome.version, None


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasChange,
    responses=ERRORS,
    summary="Point an alias at a version",
)
async def put_alias(
    body: AliasUpdate, manager: ManagerDep, name: str = NameParam, alias: str = AliasParam
) -> AliasChange:
    """Promote or roll back: the alias names `version` from now on, for every replica that
    shares the registry (admin role)."""
    registry = manager.registry
    previous = (await asyncio.to_thread(registry.aliases, name)).get(alias)
    await asyncio.to_thread(registry.set_alias, name, alias, body.version)
    log.info("alias %s@%s now names version %d (was %s)", name, alias, body.version, previous)
    serving, error = await _follow(manager, name)
    return AliasChange(
        name=name,
        alias=alias,
        version=body.version,
        previous_version=previous,
        serving_version=serving,
        reload_error=error,
    )


@router.delete(
    "/{name}/aliases/{alias}",
    response_model=AliasChange,
    responses=ERRORS,
    summary="Remove an alias",
)
async def delete_alias(
    manager: ManagerDep, name: str = NameParam, alias: str = AliasParam
) -> AliasChange:
    """Remove the alias (admin role). A replica serving the model through this alias keeps
    its current version until the alias exists again."""
    previous = await asyncio.to_thread(manager.registry.remove_alias, name, alias)
    log.info("alias %s@%s removed (it named version %d)", name, alias, previous)
    served = manager.models.get(name)
    serving = served.current.version if served is not None and served.current else None
    return AliasChange(
        name=name,
        alias=alias,
        version=None,
        previous_version=previous,
        serving_version=serving,
    )
