"""Open Inference Protocol (V2) REST endpoints: health, metadata, infer, model repository."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import zlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Body, Path, Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mlserve import __version__
from mlserve.errors import InvalidInputError, MlserveError
from mlserve.registry import ModelRef
from mlserve.runtime.model import LoadedModel, Prediction
from mlserve.schemas import Label, ModelMetadata
from mlserve.schemas.v2 import (
    DATATYPES,
    LABEL_OUTPUT,
    NUMERIC_DATATYPES,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    TABULAR_INPUT,
    TEXT_INPUT,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    RepositoryLoadResponse,
    RepositoryModel,
    RequestInput,
    RequestOutput,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
    V2ErrorResponse,
)
from mlserve.server.deps import ManagerDep, SettingsDep, StateDep
from mlserve.server.jsonbody import loads
from mlserve.server.routes.models import NameParam
from mlserve.server.routes.predict import JSONBytes
from mlserve.server.scope import client_key, mark_model
from mlserve.serving.manager import ModelManager, Runtime

log = logging.getLogger(__name__)

# Tensors (mlserve.schemas.v2): text models take one BYTES input "text" [-1]; tabular models one
# FP64 input "input" [-1, n_features] (other numeric datatypes are converted). Classifiers answer
# "label" (BYTES for string classes, INT64/FP64/BOOL for numeric ones) and, with predict_proba,
# "probabilities" FP64 [-1, n_classes] in the order of the metadata's parameters.classes;
# regressors answer "prediction" FP64 [-1].
# Answers are always JSON. Triton's binary tensor extension is read on requests (tritonclient's
# default); asks for binary outputs (binary_data, binary_data_output) are ignored, which
# tritonclient handles: without an Inference-Header-Content-Length header it parses JSON.
EXTENSIONS = ["model_repository"]
PLATFORM = "sklearn"
BINARY_HEADER = "inference-header-content-length"
# Little-endian numpy dtypes of Triton's binary tensor extension (BYTES is length-prefixed).
BINARY_DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2ErrorResponse, "description": "Invalid request (the message says why)."},
    404: {"model": V2ErrorResponse, "description": "Unknown model or version."},
    503: {"model": V2ErrorResponse, "description": "Model not loaded, or its queue is full."},
}
VersionParam = Path(description="Version number, or an alias such as 'production'.")


# ---------------------------------------------------------------------------- request bodies
class V2Request(Request):
    """A V2 body is read whatever its Content-Type (Triton reads any; curl -d sends a form
    type), gzip/deflate-encoded or not, and may carry Triton's binary tensor extension."""

    @property
    def headers(self) -> Headers:
        if not hasattr(self, "_v2_headers"):
            raw = [(k, v) for k, v in self.scope["headers"] if k != b"content-type"]
            self._v2_headers = Headers(raw=[*raw, (b"content-type", b"application/json")])
        return self._v2_headers

    async def json(self) -> Any:
        if not hasattr(self, "_v2_json"):
            body = await self.body()
            state = self.app.state.mlserve
            body = _decompress(
                body, self.headers.get("content-encoding"), state.settings.server.max_body_bytes
            )
            self._v2_json = decode_body(body, self.headers.get(BINARY_HEADER))
        return self._v2_json


class V2Route(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            return await handler(V2Request(request.scope, request.receive))

        return v2_handler


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a gzip/deflate Content-Encoding (tritonclient's request_compression_algorithm),
    refusing bodies that inflate past server.max_body_bytes."""
    if not body or encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    if encoding.strip().lower() not in ("gzip", "deflate"):
        raise HTTPException(415, f"unsupported Content-Encoding '{encoding}': use gzip or deflate")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"cannot decompress the {encoding} request body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HTTPException(413, f"the decompressed request body is over {limit} bytes")
    return out


def decode_body(body: bytes, header_length: str | None) -> Any:
    """The JSON request, with binary tensor data (Triton's extension) read into `data`.

    With an Inference-Header-Content-Length header, that many bytes of JSON come first, then
    the raw data of each input whose parameters carry `binary_data_size`, in input order.
    """
    if header_length is None:
        return loads(body)  # a JSONDecodeError becomes a 400 naming the problem
    try:
        size = int(header_length)
    except ValueError:
        raise HTTPException(400, "Inference-Header-Content-Length must be an integer") from None
    if not 0 < size <= len(body):
        raise HTTPException(
            400,
            f"Inference-Header-Content-Length is {size} but the body has {len(body)} bytes",
        )
    request = loads(body[:size])
    binary = memoryview(body)[size:]
    offset = 0
    inputs = request.get("inputs") if isinstance(request, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        nbytes = params.get("binary_data_size") if isinstance(params, dict) else None
        if nbytes is None:
            continue
        name = tensor.get("name")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise HTTPException(400, f"input '{name}': binary_data_size must be an integer >= 0")
        if offset + nbytes > len(binary):
            raise HTTPException(
                400,
                f"input '{name}' declares {nbytes} bytes of binary data; only "
                f"{len(binary) - offset} remain in the body",
            )
        chunk = binary[offset : offset + nbytes]
        offset += nbytes
        tensor["data"] = _decode_binary(chunk, tensor.get("datatype"), name)
    if offset != len(binary):
        raise HTTPException(
            400,
            f"{len(binary) - offset} bytes of binary data follow the JSON header that no input "
            "claims with parameters.binary_data_size",
        )
    return request


def _decode_binary(chunk: memoryview, datatype: Any, name: Any) -> list[Any]:
    if datatype == "BYTES":
        items: list[Any] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise HTTPException(400, f"input '{name}': truncated BYTES element length")
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > len(chunk):
                raise HTTPException(400, f"input '{name}': truncated BYTES element")
            try:
                items.append(bytes(chunk[pos : pos + length]).decode("utf-8"))
            except UnicodeDecodeError:
                raise HTTPException(
                    400, f"input '{name}' element {len(items)} is not UTF-8 text"
                ) from None
            pos += length
        return items
    dtype = BINARY_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise HTTPException(
            400, f"input '{name}': binary data of datatype {datatype!r} is not supported"
        )
    itemsize = np.dtype(dtype).itemsize
    if len(chunk) % itemsize:
        raise HTTPException(
            400, f"input '{name}': {len(chunk)} bytes is not a whole number of {datatype} values"
        )
    values: list[Any] = np.frombuffer(chunk, dtype=dtype).tolist()
    return values


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)


# ---------------------------------------------------------------------------- tensors
def _label_datatype(classes: Sequence[Label]) -> str:
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if classes and all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def _signature(
    meta: ModelMetadata, *, has_proba: bool, classes: Sequence[Label]
) -> tuple[MetadataTensor, list[MetadataTensor]]:
    """The model's one input tensor and its output tensors."""
    if meta.input_schema.kind == "text":
        tensor_in = MetadataTensor(name=TEXT_INPUT, datatype="BYTES", shape=[-1])
    else:
        n_features = meta.input_schema.n_features or len(meta.input_schema.feature_names or [])
        tensor_in = MetadataTensor(name=TABULAR_INPUT, datatype="FP64", shape=[-1, n_features])
    if meta.task == "tabular-regression":
        return tensor_in, [MetadataTensor(name=PREDICTION_OUTPUT, datatype="FP64", shape=[-1])]
    outputs = [MetadataTensor(name=LABEL_OUTPUT, datatype=_label_datatype(classes), shape=[-1])]
    if has_proba:
        outputs.append(
            MetadataTensor(name=PROBABILITIES_OUTPUT, datatype="FP64", shape=[-1, len(classes)])
        )
    return tensor_in, outputs


def _model_signature(model: LoadedModel) -> tuple[MetadataTensor, list[MetadataTensor]]:
    return _signature(model.metadata, has_proba=model.has_proba, classes=model.classes)


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of flat or nested data (iterative: nesting depth is the client's)."""
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _rows(
    inputs: list[RequestInput], model: LoadedModel, expected: MetadataTensor, limit: int
) -> list[Any]:
    """Validate the request's inputs against the model and prepare one row per sample."""
    names = [t.name for t in inputs]
    takes = f"model {model.ref} takes one {expected.datatype} input '{expected.name}' of shape "
    takes += _shape_text(expected.shape)
    matching = [t for t in inputs if t.name == expected.name]
    if not matching:
        got = ", ".join(f"'{n}'" for n in names) or "none"
        raise InvalidInputError(f"missing input '{expected.name}' (got {got}); {takes}")
    if len(inputs) > 1:
        extra = ", ".join(f"'{n}'" for n in names if n != expected.name) or f"'{expected.name}'"
        raise InvalidInputError(f"unexpected input {extra}; {takes}")
    tensor = matching[0]
    if tensor.datatype not in DATATYPES:
        raise InvalidInputError(
            f"input '{tensor.name}' has unknown datatype '{tensor.datatype}' "
            f"(V2 datatypes: {', '.join(DATATYPES)})"
        )
    accepted = {"BYTES"} if model.is_text else NUMERIC_DATATYPES
    if tensor.datatype not in accepted:
        raise InvalidInputError(f"input '{tensor.name}' has datatype {tensor.datatype}; {takes}")
    shape = tensor.shape
    values = _flatten(tensor.data)
    if math.prod(shape) != len(values):
        raise InvalidInputError(
            f"input '{tensor.name}' has shape {_shape_text(shape)} ({math.prod(shape)} elements) "
            f"but {len(values)} values in 'data'"
        )
    if model.is_text:
        if not shape or math.prod(shape[1:]) != 1:
            raise InvalidInputError(
                f"input '{tensor.name}' has shape {_shape_text(shape)}; text models take one "
                f"string per row, shape [n] or [n, 1]"
            )
    elif len(shape) != 2 or shape[1] != model.n_features:
        names_hint = f" ({', '.join(model.feature_names)})" if model.feature_names else ""
        raise InvalidInputError(
            f"input '{tensor.name}' has shape {_shape_text(shape)}; model {model.ref} expects "
            f"[n, {model.n_features}]: {model.n_features} features per row{names_hint}"
        )
    n_rows = shape[0]
    if n_rows > limit:
        raise InvalidInputError(
            f"input '{tensor.name}' has {n_rows} rows; the limit is {limit} "
            "(server.max_batch_items)"
        )
    field = tensor.name
    if model.is_text:
        return [model.prepare(text=v, field=f"{field}[{i}]") for i, v in enumerate(values)]
    k = model.n_features
    return [
        model.prepare(features=values[i * k : (i + 1) * k], field=f"{field}[{i}]")
        for i in range(n_rows)
    ]


def _wanted_outputs(
    requested: list[RequestOutput] | None, available: list[MetadataTensor]
) -> list[MetadataTensor]:
    """The outputs to answer with, in the order asked (all of them when none are asked)."""
    if requested is None:
        return available
    by_name = {t.name: t for t in available}
    out: list[MetadataTensor] = []
    for item in requested:
        spec = by_name.get(item.name)
        if spec is None:
            known = ", ".join(f"'{n}'" for n in by_name)
            raise InvalidInputError(f"unknown output '{item.name}' (this model has {known})")
        if spec not in out:
            out.append(spec)
    return out


def _label_value(label: Label | float, datatype: str) -> Any:
    if datatype == "BYTES":
        return str(label)
    if datatype == "INT64":
        return int(label)
    if datatype == "BOOL":
        return bool(label)
    return float(label)


def _render(spec: MetadataTensor, model: LoadedModel, results: list[Prediction]) -> dict[str, Any]:
    n = len(results)
    if spec.name == PROBABILITIES_OUTPUT:
        keys = [str(c) for c in model.classes]
        data: list[Any] = []
        for p in results:
            assert p.probabilities is not None  # noqa: S101 - has_proba put it in the signature
            data.extend(p.probabilities[key] for key in keys)
        return {"name": spec.name, "shape": [n, len(keys)], "datatype": "FP64", "data": data}
    values = [_label_value(p.label, spec.datatype) for p in results]
    return {"name": spec.name, "shape": [n], "datatype": spec.datatype, "data": values}


# ---------------------------------------------------------------------------- health and server
@router.get("/health/live", response_model=ServerLiveResponse, summary="V2 server liveness")
async def server_live() -> ServerLiveResponse:
    """The process is up and its event loop answers."""
    return ServerLiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadyResponse,
    responses={503: {"model": ServerReadyResponse, "description": "Not ready, or draining."}},
    summary="V2 server readiness",
)
async def server_ready(state: StateDep) -> Response:
    """200 once loading is done and a model serves; 503 before that and while shutting down."""
    ready = state.is_ready
    return JSONBytes(orjson.dumps({"ready": ready}), status_code=200 if ready else 503)


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
        tensor_in, outputs = _model_signature(model)
        classes = model.classes
    else:
        lookup = served.ref if version is None else ref
        meta = await asyncio.to_thread(
            manager.registry.resolve, lookup, default_alias=manager.settings.server.default_alias
        )
        classes = list(meta.classes or [])
        tensor_in, outputs = _signature(meta, has_proba=meta.has_predict_proba, classes=classes)
    versions = await asyncio.to_thread(manager.registry.versions, name)
    parameters: dict[str, Any] = {"version": str(meta.version), "task": meta.task}
    if meta.task != "tabular-regression":
        parameters["classes"] = list(classes)
    if meta.input_schema.kind == "tabular":
        parameters["feature_names"] = list(meta.input_schema.feature_names or [])
    return ModelMetadataResponse(
        name=name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[tensor_in],
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
    return JSONBytes(body.model_dump_json().encode(), status_code=200 if ready else 503)


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    503: {"model": ModelReadyResponse, "description": "Known, but not loaded."},
}


@router.get(
    "/models/{name}/ready",
    response_model=ModelReadyResponse,
    responses=READY_RESPONSES,
    summary="V2 model readiness",
)
async def model_ready(manager: ManagerDep, name: str = NameParam) -> Response:
    """200 when the model's serving version is loaded, 503 when not; 404 for unknown models."""
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
    """200 when that version is loaded here, 503 when not; 404 for unknown versions."""
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
    tensor_in, outputs = _model_signature(model)
    wanted = _wanted_outputs(body.outputs, outputs)
    rows = _rows(body.inputs, model, tensor_in, limit)
    # Row i is remembered as <X-Request-ID>-<i> for POST /api/feedback.
    scored = await service.predict_rows(
        runtime, rows, request_id=scope["state"]["request_id"], use_cache=False
    )
    results = scored.predictions
    payload = {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": body.id if body.id is not None else request.scope["state"]["request_id"],
        "outputs": [_render(spec, model, results) for spec in wanted],
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
# Load and unload change what the server serves: they become admin-only once auth lands.


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
    try:
        registered = await asyncio.to_thread(manager.registry.names)
    except MlserveError as exc:  # still report what is served if the registry went away
        log.warning("cannot list the registry: %s", exc.message)
        registered = []
    out = []
    for name in sorted(set(registered) | set(manager.models)):
        served = manager.models.get(name)
        if served is None:
            item = RepositoryModel(
                name=name,
                version=None,
                state="UNAVAILABLE",
                reason=f"not served; POST /v2/repository/models/{name}/load",
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


@router.post(
    "/repository/models/{name}/load",
    response_model=RepositoryLoadResponse,
    responses=ERRORS,
    summary="V2 load a model",
)
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


@router.post(
    "/repository/models/{name}/unload",
    response_model=RepositoryLoadResponse,
    responses=ERRORS,
    summary="V2 unload a model",
)
async def repository_unload(
    manager: ManagerDep,
    name: str = NameParam,
    body: Annotated[RepositoryLoadRequest | None, Body()] = None,
) -> RepositoryLoadResponse:
    """Stop serving a model: queued requests finish, new ones get 503 until it is loaded."""
    await manager.unload(name)
    return RepositoryLoadResponse(name=name, version=None, state="UNAVAILABLE")
