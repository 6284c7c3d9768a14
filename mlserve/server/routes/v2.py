"""Open Inference Protocol (V2) REST endpoints: health, metadata, infer, model repository."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Path, Request
from starlette.responses import Response

from mlserve import __version__
from mlserve.errors import Forbidden, InvalidInputError, MlserveError
from mlserve.registry import ModelRef
from mlserve.runtime.model import LoadedModel
from mlserve.schemas.v2 import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    RepositoryLoadResponse,
    RepositoryModel,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
    V2ErrorResponse,
)
from mlserve.server.deps import ManagerDep, SettingsDep, StateDep
from mlserve.server.routes.models import NameParam
from mlserve.server.routes.predict import JSONBytes
from mlserve.server.scope import client_key, mark_model
from mlserve.server.v2codec import (
    V2JSONRoute,
    V2Route,
    input_rows,
    model_signature,
    render_output,
    tensor_signature,
    wanted_outputs,
)
from mlserve.serving.manager import ModelManager, Runtime

log = logging.getLogger(__name__)

EXTENSIONS = ["model_repository"]
PLATFORM = "sklearn"

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2ErrorResponse, "description": "Invalid request (the message says why)."},
    404: {"model": V2ErrorResponse, "description": "Unknown model or version."},
    503: {"model": V2ErrorResponse, "description": "Model not loaded, or its queue is full."},
}
# A version number (>= 1, leading zeros allowed) or an alias (lowercase letters, digits, '_'
# or '-', not only digits), as the registry reads model references.
VersionParam = Path(
    description="Version number, or an alias such as 'production'.",
    pattern=r"^(?:0*[1-9][0-9]*|[a-z0-9_-]*[a-z_-][a-z0-9_-]*)$",
    max_length=64,
)
# Readiness answers 400 when not ready, as the protocol (a 4xx) and Triton do; /api/ready
# keeps 503 (the Kubernetes convention).
NOT_READY = 400


# ---------------------------------------------------------------------------- health and server
@router.get("/health/live", response_model=ServerLiveResponse, summary="V2 server liveness")
async def server_live() -> ServerLiveResponse:
    """The process is up and its event loop answers."""
    return ServerLiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadyResponse,
    responses={NOT_READY: {"model": ServerReadyResponse, "description": "Not ready, or draining."}},
    summary="V2 server readiness",
)
async def server_ready(state: StateDep) -> Response:
    """200 once loading is done and a model serves; 400 before that and while shutting down."""
    ready = state.is_ready
    return JSONBytes(orjson.dumps({"ready": ready}), status_code=200 if ready else NOT_READY)


@router.get("", response_model=ServerMetadataResponse, summary="V2 server metadata")
async def server_metadata() -> ServerMetadataResponse:
    """Server name, version and the protocol extensions it implements."""
    return ServerMetadataResponse(name="mlserve", version=__version__, extensions=EXTENSIONS)


# ---------------------------------------------------------------------------- models
def _reference(name: str, version: str | None) -> ModelRef:
    if version is None:
        return ModelRef(name=name)
    text = version.strip()
    return ModelRef.parse(f"{name}:{text}" if text.isdigit() else f"{name}@{text}")


async def _model_metadata(
    manager: ModelManager, name: str, version: str | None
) -> ModelMetadataResponse:
    served = manager.served(name)
    current = served.current
    ref = _reference(name, version)
    model: LoadedModel | None = None
    if current is not None and (
        version is None
        or ref.version == current.version
        or (ref.alias is not None and served.aliases.get(ref.alias) == current.version)
    ):
        model = current.model
    if model is not None:
        meta = model.metadata
        tensors_in, outputs = model_signature(model)
        classes = model.classes
    else:
        lookup = served.ref if version is None else ref
        meta = await asyncio.to_thread(
            manager.registry.resolve, lookup, default_alias=manager.settings.server.default_alias
        )
        classes = list(meta.classes or [])
        tensors_in, outputs = tensor_signature(
            meta,
            has_proba=meta.has_predict_proba,
            classes=classes,
            score_method=meta.score_method,
        )
    versions = await asyncio.to_thread(manager.registry.versions, name)
    parameters: dict[str, Any] = {"version": str(meta.version), "task": meta.task}
    if classes:
        parameters["classes"] = list(classes)
    if meta.input_schema.kind == "tabular":
        parameters["feature_names"] = list(meta.input_schema.feature_names or [])
    if meta.input_schema.columns:
        parameters["columns"] = [c.model_dump() for c in meta.input_schema.columns]
    return ModelMetadataResponse(
        name=name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=tensors_in,
        outputs=outputs,
        parameters=parameters,
    )


@router.get(
    "/models/{name}",
    response_model=ModelMetadataResponse,
    responses=ERRORS,
    summary="V2 model metadata",
)
async def model_metadata(manager: ManagerDep, name: str = NameParam) -> ModelMetadataResponse:
    """Input and output tensors of the version the model serves, and all its versions."""
    return await _model_metadata(manager, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    responses=ERRORS,
    summary="V2 model version metadata",
)
async def model_version_metadata(
    manager: ManagerDep, name: str = NameParam, version: str = VersionParam
) -> ModelMetadataResponse:
    """Input and output tensors of one version (a number or an alias)."""
    return await _model_metadata(manager, name, version)


async def _model_ready(manager: ModelManager, name: str, version: str | None) -> Response:
    served = manager.served(name)
    loaded = dict(served.extra)
    if served.current is not None:
        loaded[served.current.version] = served.current
    if version is None:
        ready = served.current is not None
    else:
        ref = _reference(name, version)
        wanted = ref.version if ref.version is not None else served.aliases.get(str(ref.alias))
        if wanted is None:
            # Not an alias this server knows: ask the registry (404 when it does not exist).
            wanted = await asyncio.to_thread(
                manager.registry.resolve_version,
                ref,
                default_alias=manager.settings.server.default_alias,
            )
        elif wanted not in loaded:
            await asyncio.to_thread(manager.registry.metadata, name, wanted)  # 404 if unknown
        ready = wanted in loaded
    body = ModelReadyResponse(name=name, ready=ready)
    return JSONBytes(body.model_dump_json().encode(), status_code=200 if ready else NOT_READY)


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: ERRORS[404],
    NOT_READY: {
        "model": ModelReadyResponse | V2ErrorResponse,
        "description": "Known, but not loaded ({name, ready: false}); or an invalid request.",
    },
}


@router.get(
    "/models/{name}/ready",
    response_model=ModelReadyResponse,
    responses=READY_RESPONSES,
    summary="V2 model readiness",
)
async def model_ready(manager: ManagerDep, name: str = NameParam) -> Response:
    """200 when the model's serving version is loaded, 400 when not; 404 for unknown models."""
    return await _model_ready(manager, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyResponse,
    responses=READY_RESPONSES,
    summary="V2 model version readiness",
)
async def model_version_ready(
    manager: ManagerDep, name: str = NameParam, version: str = VersionParam
) -> Response:
    """200 when that version is loaded here, 400 when not; 404 for unknown versions."""
    return await _model_ready(manager, name, version)


# ---------------------------------------------------------------------------- inference
INFER_EXAMPLES: dict[str, Any] = {
    "text": {
        "summary": "Text model: BYTES strings",
        "value": {
            "id": "42",
            "inputs": [
                {
                    "name": "text",
                    "shape": [2],
                    "datatype": "BYTES",
                    "data": ["The staff were lovely", "Refund took three weeks"],
                }
            ],
        },
    },
    "tabular": {
        "summary": "Tabular model: FP64 rows, nested data, probabilities only",
        "value": {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 4],
                    "datatype": "FP64",
                    "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
                }
            ],
            "outputs": [{"name": "probabilities"}],
        },
    },
}
InferBody = Annotated[InferenceRequest, Body(openapi_examples=INFER_EXAMPLES)]


async def _infer(
    request: Request,
    body: InferenceRequest,
    limit: int,
    name: str,
    version: str | None,
) -> Response:
    # A/B splits and shadows apply here too (not the prediction cache).
    service = request.app.state.mlserve.service
    scope = request.scope
    runtime: Runtime = await service.choose(name, version, lambda: client_key(scope))
    mark_model(scope, runtime)
    model = runtime.model
    tensors_in, outputs = model_signature(model)
    wanted = wanted_outputs(body.outputs, outputs)
    rows = input_rows(body.inputs, model, tensors_in, limit)
    # Row i is remembered as <X-Request-ID>-<i> for POST /api/feedback.
    scored = await service.predict_rows(
        runtime, rows, request_id=scope["state"]["request_id"], use_cache=False
    )
    if scored.runtime is not runtime:  # the serving version answered for a degraded split pick
        mark_model(scope, scored.runtime)
        model = scored.runtime.model
        wanted = wanted_outputs(body.outputs, model_signature(model)[1])
    results = scored.predictions
    payload = {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": body.id if body.id is not None else request.scope["state"]["request_id"],
        "outputs": [render_output(spec, model, results, name=name) for name, spec in wanted],
    }
    return JSONBytes(orjson.dumps(payload))


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    responses=ERRORS,
    summary="V2 inference",
)
async def infer(
    body: InferBody,
    request: Request,
    settings: SettingsDep,
    name: str = NameParam,
) -> Response:
    """Predict every row of the input tensor in one batched model call (serving version)."""
    limit = settings.server.max_batch_items
    return await _infer(request, body, limit, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=ERRORS,
    summary="V2 inference on a version",
)
async def infer_version(
    body: InferBody,
    request: Request,
    settings: SettingsDep,
    name: str = NameParam,
    version: str = VersionParam,
) -> Response:
    """Predict with one version (a number or an alias); it is loaded on first use."""
    limit = settings.server.max_batch_items
    return await _infer(request, body, limit, name, version)


# ---------------------------------------------------------------------------- model repository
# Load and unload change what the server serves: off unless server.model_control = "explicit"
# (as Triton's --model-control-mode), admin-only with auth on (server/auth.py), and JSON-only
# (V2JSONRoute), so that no web page can send them.
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {
        "model": V2ErrorResponse,
        "description": 'Model control is off (server.model_control = "none", the default), or '
        "the caller lacks the 'admin' role.",
    },
}


def _model_control(settings: SettingsDep) -> None:
    if settings.server.model_control != "explicit":
        raise Forbidden(
            'model control is off: set server.model_control = "explicit" to load and unload '
            "models through the V2 repository API"
        )


@router.post(
    "/repository/index",
    response_model=list[RepositoryModel],
    responses=ERRORS,
    summary="V2 model repository index",
)
async def repository_index(
    manager: ManagerDep, body: Annotated[RepositoryIndexRequest | None, Body()] = None
) -> list[RepositoryModel]:
    """Every model of the registry and of this server, READY, LOADING or UNAVAILABLE."""
    control = manager.settings.server.model_control == "explicit"
    try:
        registered = await asyncio.to_thread(manager.registry.names)
    except MlserveError as exc:  # still report what is served if the registry went away
        log.warning("cannot list the registry: %s", exc.message)
        registered = []
    out = []
    for name in sorted(set(registered) | set(manager.models)):
        served = manager.models.get(name)
        if served is None:
            how = f"POST /v2/repository/models/{name}/load" if control else "server.models"
            item = RepositoryModel(
                name=name, version=None, state="UNAVAILABLE", reason=f"not served; see {how}"
            )
        elif served.current is not None:
            item = RepositoryModel(
                name=name, version=str(served.current.version), state="READY", reason=""
            )
        elif served.status == "loading":
            item = RepositoryModel(name=name, version=None, state="LOADING", reason="")
        else:
            reason = served.error or "not loaded"
            item = RepositoryModel(name=name, version=None, state="UNAVAILABLE", reason=reason)
        out.append(item)
    if body is not None and body.ready:
        out = [m for m in out if m.state == "READY"]
    return out


async def repository_load(
    manager: ManagerDep,
    name: str = NameParam,
    body: Annotated[RepositoryLoadRequest | None, Body()] = None,
) -> RepositoryLoadResponse:
    """Load (or reload) a model from the registry, also one this server did not serve yet."""
    params = (body.parameters if body is not None else None) or {}
    overrides = sorted(k for k in params if k == "config" or k.startswith("file:"))
    if overrides:
        raise InvalidInputError(
            f"model configuration overrides are not supported ({', '.join(overrides)}); "
            "register a new version instead"
        )
    runtime = await manager.load(name)
    return RepositoryLoadResponse(name=name, version=str(runtime.version), state="READY")


async def repository_unload(
    manager: ManagerDep,
    name: str = NameParam,
    body: Annotated[RepositoryLoadRequest | None, Body()] = None,
) -> RepositoryLoadResponse:
    """Stop serving a model: queued requests finish, new ones get 503 until it is loaded."""
    await manager.unload(name)
    return RepositoryLoadResponse(name=name, version=None, state="UNAVAILABLE")


# Added here rather than by decorator: FastAPI's decorators take no route class of their own.
CONTROL_ROUTE: dict[str, Any] = {
    "methods": ["POST"],
    "response_model": RepositoryLoadResponse,
    "responses": CONTROL_ERRORS,
    "dependencies": [Depends(_model_control)],
    "route_class_override": V2JSONRoute,
}
router.add_api_route(
    "/repository/models/{name}/load", repository_load, summary="V2 load a model", **CONTROL_ROUTE
)
router.add_api_route(
    "/repository/models/{name}/unload",
    repository_unload,
    summary="V2 unload a model",
    **CONTROL_ROUTE,
)
