"""Model routes: what is served, registry metadata, reload, and a version's export bundle."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from mlserve.errors import MlserveError, redact_paths
from mlserve.registry import version_mismatch_warnings
from mlserve.registry.bundle import build_bundle, bundle_filename
from mlserve.schemas import (
    ErrorResponse,
    ModelInfo,
    ModelList,
    ModelListItem,
    ReloadResponse,
    TrafficInfo,
    TrafficUpdate,
    VersionInfo,
)
from mlserve.server.deps import ManagerDep, StateDep
from mlserve.server.jsonbody import JSONRoute
from mlserve.serving.manager import ModelManager, ServedModel

router = APIRouter(prefix="/api/models", tags=["models"], route_class=JSONRoute)

NameParam = Path(description="Model name.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Model or version not found."}
}


def _loaded_versions(served: ServedModel) -> dict[int, Any]:
    out: dict[int, Any] = dict(served.extra)
    if served.current is not None:
        out[served.current.version] = served.current
    return out


@router.get("", response_model=ModelList, summary="List served models")
async def list_models(manager: ManagerDep) -> ModelList:
    """Every served model: versions, aliases, task, and which versions are loaded."""

    def build() -> list[ModelListItem]:
        items = []
        for name, served in sorted(manager.models.items()):
            registry_error = None
            try:
                # A model whose registry files went bad is still listed, marked with why.
                summary = manager.registry.checked_summary(name)
                registry_error = summary.error
            except MlserveError:
                summary = None  # gone from disk since loading: still report what is served
            current = served.current
            status, error = served.health
            if error is None and registry_error is not None:
                error = redact_paths(registry_error, manager.registry.root, manager.settings.home)
            items.append(
                ModelListItem(
                    name=name,
                    task=summary.task
                    if summary
                    else current.model.metadata.task
                    if current
                    else None,
                    versions=summary.versions if summary else [],
                    aliases=summary.aliases if summary else {},
                    serving_version=current.version if current else None,
                    loaded_versions=sorted(_loaded_versions(served)),
                    status=status,
                    error=error,
                )
            )
        return items

    return ModelList(models=await asyncio.to_thread(build), default_model=manager.default_name)


async def _version_info(manager: ModelManager, name: str, version: int) -> dict[str, Any]:
    served = manager.served(name)
    meta = await asyncio.to_thread(manager.registry.metadata, name, version)
    aliases = await asyncio.to_thread(manager.registry.aliases, name)
    runtime = _loaded_versions(served).get(version)
    data = meta.model_dump()
    data.update(
        aliases=sorted(a for a, v in aliases.items() if v == version),
        loaded=runtime is not None,
        loaded_at=runtime.loaded_at if runtime else None,
        warnings=version_mismatch_warnings(meta),
    )
    return data


@router.get("/{name}", response_model=ModelInfo, responses=NOT_FOUND, summary="Describe a model")
async def model_info(manager: ManagerDep, name: str = NameParam) -> ModelInfo:
    """Registry metadata (real metrics, classes, input schema, sha256) of the serving version."""
    served = manager.served(name)
    if served.current is not None:
        version = served.current.version
    else:
        version = await asyncio.to_thread(
            manager.registry.resolve_version,
            served.ref,
            default_alias=manager.settings.server.default_alias,
        )
    data = await _version_info(manager, name, version)
    data["versions"] = await asyncio.to_thread(manager.registry.versions, name)
    data["all_aliases"] = await asyncio.to_thread(manager.registry.aliases, name)
    return ModelInfo.model_validate(data)


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionInfo,
    responses=NOT_FOUND,
    summary="Describe a model version",
)
async def version_info(
    manager: ManagerDep,
    name: str = NameParam,
    version: int = Path(ge=1, description="Version number."),
) -> VersionInfo:
    """Registry metadata of one version, and whether this server has it loaded."""
    return VersionInfo.model_validate(await _version_info(manager, name, version))


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The version as a bundle (a tar.gz of metadata.json and the artifact) "
        "that `mlserve models import` registers in another registry.",
        "content": {
            "application/gzip": {
                "schema": {"type": "string", "format": "binary"},
                "example": "<binary: metadata.json, then model.joblib, in a gzip-compressed tar>",
            }
        },
    },
    404: {"model": ErrorResponse, "description": "Model, version or alias not found."},
    422: {"model": ErrorResponse, "description": "Invalid version or alias."},
    500: {
        "model": ErrorResponse,
        "description": "The stored artifact no longer matches its sha256 (integrity_error).",
    },
}


@router.get(
    "/{name}/versions/{version}/export",
    # Response (no media type of its own): the errors stay documented as JSON, the 200 as gzip.
    response_class=Response,
    responses=EXPORT_RESPONSES,
    summary="Export a version as a portable bundle",
)
async def export_version(
    manager: ManagerDep,
    name: str = NameParam,
    version: str = Path(
        description="Version number, or an alias naming one.",
        pattern=r"^(?:[1-9][0-9]*|[a-z0-9_-]*[a-z_-][a-z0-9_-]*)$",
        max_length=64,
        examples=["3", "production"],
    ),
) -> Response:
    """Download one version of the registry (artifact, metadata with signature, metrics, drift
    baseline, sha256) to import into another registry (admin role)."""
    ref = f"{name}:{version}" if version.isdigit() else f"{name}@{version}"
    meta, payload = await asyncio.to_thread(build_bundle, manager.registry, ref)
    return Response(
        payload,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{bundle_filename(meta)}"'},
    )


@router.post(
    "/{name}/reload",
    response_model=ReloadResponse,
    responses={
        404: {
            "model": ErrorResponse,
            "description": "Not in the registry, or not in server.models when that is set.",
        },
        500: {"model": ErrorResponse, "description": "Loading failed; the old version serves."},
        503: {"model": ErrorResponse, "description": "A new model failed to load."},
    },
    summary="Reload a model from the registry",
)
async def reload_model(manager: ManagerDep, name: str = NameParam) -> ReloadResponse:
    """Re-read the registry and atomically swap in what the model's alias now points at.

    A model registered after the server started is loaded and served from then on, unless
    the server serves a fixed list of models (server.models)."""
    outcome = await manager.reload(name)
    return ReloadResponse(
        name=outcome.name,
        status="reloaded" if outcome.changed else "unchanged",
        previous_version=outcome.previous_version,
        version=outcome.version,
    )


TRAFFIC_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Model or version not found."},
    422: {"model": ErrorResponse, "description": "Invalid split or shadow."},
    500: {"model": ErrorResponse, "description": "A version failed to load; nothing changed."},
}


@router.get(
    "/{name}/traffic",
    response_model=TrafficInfo,
    responses=NOT_FOUND,
    summary="Show a model's A/B split and shadow",
)
async def get_traffic(state: StateDep, name: str = NameParam) -> TrafficInfo:
    """The model's traffic split over versions and its shadow version, in this process."""
    return TrafficInfo.model_validate(state.traffic.describe(name))


@router.put(
    "/{name}/traffic",
    response_model=TrafficInfo,
    responses=TRAFFIC_ERRORS,
    summary="Set a model's A/B split and shadow",
)
async def put_traffic(body: TrafficUpdate, state: StateDep, name: str = NameParam) -> TrafficInfo:
    """Split requests without an explicit version over versions by weight (each client stays
    on one), and mirror live traffic to a shadow version. Applies to this server process;
    every version named is loaded before the change takes effect."""
    info = await state.traffic.configure(name, body.split, body.shadow)
    return TrafficInfo.model_validate(info)


@router.delete(
    "/{name}/traffic",
    response_model=TrafficInfo,
    responses=NOT_FOUND,
    summary="Clear a model's A/B split and shadow",
)
async def delete_traffic(state: StateDep, name: str = NameParam) -> TrafficInfo:
    """Serve the model's alias target to everyone again and stop mirroring (this process)."""
    return TrafficInfo.model_validate(await state.traffic.clear(name))
