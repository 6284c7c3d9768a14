"""The Open Inference Protocol (V2) codec: request bodies (any Content-Type, gzip/deflate,
Triton's binary tensor extension) and tensors to and from model rows and answers."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mlserve.errors import InvalidInputError
from mlserve.runtime.model import LoadedModel, Prediction
from mlserve.schemas import ColumnSpec, Label, ModelMetadata
from mlserve.schemas.v2 import (
    DATATYPES,
    LABEL_OUTPUT,
    MLSERVER_OUTPUTS,
    NUMERIC_DATATYPES,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    SCORES_OUTPUT,
    TABULAR_INPUT,
    TEXT_INPUT,
    MetadataTensor,
    RequestInput,
    RequestOutput,
)
from mlserve.server.jsonbody import loads, refuse_non_json

__all__ = [
    "BINARY_HEADER",
    "V2JSONRoute",
    "V2Request",
    "V2Route",
    "decode_body",
    "input_rows",
    "label_datatype",
    "model_signature",
    "render_output",
    "tensor_signature",
    "wanted_outputs",
]

# Tensors (mlserve.schemas.v2): text models take one BYTES input "text" [-1]; tabular models one
# FP64 input "input" [-1, n_features] (other numeric datatypes are converted). Classifiers answer
# "label" (BYTES for string classes, INT64/FP64/BOOL for numeric ones) and, with predict_proba,
# "probabilities" FP64 [-1, n_classes] in the order of the metadata's parameters.classes;
# regressors answer "prediction" FP64 [-1].
# MLServer's scikit-learn runtime names the same outputs after the estimator's methods:
# "predict" (label or prediction) and "predict_proba" (probabilities); they are accepted in
# `outputs` and answered under the name asked (MLSERVER_OUTPUTS).
# Answers are always JSON. Triton's binary tensor extension is read on requests (tritonclient's
# default); asks for binary outputs (binary_data, binary_data_output) are ignored, which
# tritonclient handles: without an Inference-Header-Content-Length header it parses JSON.
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
    """A V2 route reading its body as V2Request does (inference, the repository index)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            return await handler(V2Request(request.scope, request.receive))

        return v2_handler


class V2JSONRoute(V2Route):
    """A V2 route that changes what is served (repository load and unload): a body declared as
    anything but JSON is refused (400), so that no web page's form post or text/plain "simple"
    request gets through; a body without a Content-Type (tritonclient sends none) is JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def json_only_handler(request: Request) -> Response:
            refuse_non_json(request.scope)
            return await handler(request)

        return json_only_handler


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


# ---------------------------------------------------------------------------- tensors
def label_datatype(classes: Sequence[Label]) -> str:
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if classes and all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def column_datatype(spec: ColumnSpec) -> str:
    """The V2 datatype of a DataFrame model's column tensor."""
    if spec.dtype == "category":
        cats = spec.categories or []
        if cats and all(isinstance(c, int) and not isinstance(c, bool) for c in cats):
            return "INT64"
        if cats and all(isinstance(c, int | float) and not isinstance(c, bool) for c in cats):
            return "FP64"
        return "BYTES"
    return {"float": "FP64", "int": "INT64", "bool": "BOOL"}.get(spec.dtype, "BYTES")


def tensor_signature(
    meta: ModelMetadata,
    *,
    has_proba: bool,
    classes: Sequence[Label],
    score_method: str | None = None,
    indicator: bool = True,
) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
    """The model's input tensors (one; one per column for DataFrame models) and outputs."""
    schema = meta.input_schema
    if schema.kind == "text":
        inputs = [MetadataTensor(name=TEXT_INPUT, datatype="BYTES", shape=[-1])]
    elif schema.dataframe and schema.columns:
        inputs = [
            MetadataTensor(name=c.name, datatype=column_datatype(c), shape=[-1])
            for c in schema.columns
        ]
    else:
        n_features = schema.n_features or len(schema.feature_names or [])
        inputs = [MetadataTensor(name=TABULAR_INPUT, datatype="FP64", shape=[-1, n_features])]
    width = meta.n_outputs
    if meta.task == "tabular-regression":
        shape = [-1] if width == 1 else [-1, width]
        return inputs, [MetadataTensor(name=PREDICTION_OUTPUT, datatype="FP64", shape=shape)]
    if meta.task == "tabular-multilabel":
        # Indicator models: 1 per output that is on (REST lists those outputs' indices);
        # other multi-output classifiers: each output's label.
        label_type = "INT64" if indicator else "BYTES"
        outputs = [MetadataTensor(name=LABEL_OUTPUT, datatype=label_type, shape=[-1, width])]
        if has_proba:
            outputs.append(
                MetadataTensor(name=PROBABILITIES_OUTPUT, datatype="FP64", shape=[-1, width])
            )
        return inputs, outputs
    label_type = label_datatype(classes) if classes else "INT64"
    outputs = [MetadataTensor(name=LABEL_OUTPUT, datatype=label_type, shape=[-1])]
    if has_proba:
        outputs.append(
            MetadataTensor(name=PROBABILITIES_OUTPUT, datatype="FP64", shape=[-1, len(classes)])
        )
    if score_method is not None:
        n_scores = len(classes) if score_method == "decision_function" and len(classes) > 2 else 1
        outputs.append(MetadataTensor(name=SCORES_OUTPUT, datatype="FP64", shape=[-1, n_scores]))
    return inputs, outputs


def model_signature(model: LoadedModel) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
    return tensor_signature(
        model.metadata,
        has_proba=model.has_proba,
        classes=model.classes,
        score_method=model.score_method,
        indicator=model.indicator,
    )


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


def input_rows(
    inputs: list[RequestInput], model: LoadedModel, expected: list[MetadataTensor], limit: int
) -> list[Any]:
    """Validate the request's inputs against the model and prepare one row per sample."""
    if model.signature is not None:
        return _column_rows(inputs, model, expected, limit)
    return _tensor_rows(inputs, model, expected[0], limit)


def _column_rows(
    inputs: list[RequestInput], model: LoadedModel, expected: list[MetadataTensor], limit: int
) -> list[Any]:
    """DataFrame models: one tensor per column ([n] or [n, 1]), as MLServer's pandas codec
    sends them; BYTES for strings, BOOL for booleans, numbers for numeric columns."""
    wanted = {t.name: t for t in expected}
    got = {t.name: t for t in inputs}
    takes = f"model {model.ref} takes one input per column: " + ", ".join(
        f"{t.name} ({t.datatype})" for t in expected
    )
    missing = [n for n in wanted if n not in got]
    extra = [n for n in got if n not in wanted]
    if missing or extra or len(got) != len(inputs):
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(repr(n) for n in missing)}")
        if extra:
            parts.append(f"unexpected input(s) {', '.join(repr(n) for n in extra)}")
        if len(got) != len(inputs):
            parts.append("an input is given twice")
        raise InvalidInputError(f"{'; '.join(parts)}; {takes}")
    columns: list[list[Any]] = []
    n_rows: int | None = None
    for name, spec in wanted.items():
        tensor = got[name]
        if tensor.datatype not in DATATYPES:
            raise InvalidInputError(
                f"input '{name}' has unknown datatype '{tensor.datatype}' "
                f"(V2 datatypes: {', '.join(DATATYPES)})"
            )
        numeric = spec.datatype in ("FP64", "INT64")
        if tensor.datatype != spec.datatype and not (
            numeric and tensor.datatype in NUMERIC_DATATYPES
        ):
            raise InvalidInputError(f"input '{name}' has datatype {tensor.datatype}; {takes}")
        shape = tensor.shape
        values = _flatten(tensor.data)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInputError(
                f"input '{name}' has shape {_shape_text(shape)}; a column is [n] or [n, 1]"
            )
        if shape[0] != len(values):
            raise InvalidInputError(
                f"input '{name}' has shape {_shape_text(shape)} but {len(values)} values in 'data'"
            )
        if n_rows is None:
            n_rows = shape[0]
        elif shape[0] != n_rows:
            raise InvalidInputError(
                f"input '{name}' has {shape[0]} rows, the first input {n_rows}: "
                "every column needs one value per row"
            )
        columns.append(values)
    n_rows = n_rows or 0
    if n_rows > limit:
        raise InvalidInputError(
            f"the inputs have {n_rows} rows; the limit is {limit} (server.max_batch_items)"
        )
    names = list(wanted)
    return [
        model.prepare(
            features=dict(zip(names, [c[i] for c in columns], strict=True)), field=f"row {i}"
        )
        for i in range(n_rows)
    ]


def _tensor_rows(
    inputs: list[RequestInput], model: LoadedModel, expected: MetadataTensor, limit: int
) -> list[Any]:
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


def wanted_outputs(
    requested: list[RequestOutput] | None, available: list[MetadataTensor]
) -> list[tuple[str, MetadataTensor]]:
    """(name to answer under, output) in the order asked, all of them when none are asked; an
    output is also found by its MLServer name (MLSERVER_OUTPUTS) and answered under it."""
    if requested is None:
        return [(t.name, t) for t in available]
    by_name = {t.name: t for t in available}
    aliases = {
        alias: by_name[target]
        for alias, targets in MLSERVER_OUTPUTS.items()
        for target in targets
        if target in by_name
    }
    out: dict[str, MetadataTensor] = {}
    for item in requested:
        spec = by_name.get(item.name) or aliases.get(item.name)
        if spec is None:
            known = ", ".join(f"'{n}'" for n in by_name)
            also = ", ".join(f"'{n}'" for n in aliases)
            raise InvalidInputError(
                f"unknown output '{item.name}' (this model has {known}; MLServer's names "
                f"{also} are accepted too)"
            )
        out.setdefault(item.name, spec)
    return list(out.items())


def _label_value(label: Label | list[Label], datatype: str) -> Any:
    if isinstance(label, list):
        raise TypeError("a list label is rendered by render_output")
    if datatype == "BYTES":
        return str(label)
    if datatype == "INT64":
        return int(label)
    if datatype == "BOOL":
        return bool(label)
    return float(label)


def render_output(
    spec: MetadataTensor, model: LoadedModel, results: list[Prediction], *, name: str | None = None
) -> dict[str, Any]:
    """The output tensor `spec` of `results`, named `name` (default: the output's own name)."""
    n = len(results)
    name = name or spec.name
    data: list[Any] = []
    if spec.name == PROBABILITIES_OUTPUT:
        width = spec.shape[-1]
        keys = [str(c) for c in model.classes] or [str(j) for j in range(width)]
        for p in results:
            assert p.probabilities is not None  # noqa: S101 - has_proba put it in the signature
            data.extend(p.probabilities[key] for key in keys)
        return {"name": name, "shape": [n, len(keys)], "datatype": "FP64", "data": data}
    if spec.name == SCORES_OUTPUT:
        width = spec.shape[-1]
        for p in results:
            assert p.scores is not None  # noqa: S101 - score_method put it in the signature
            data.extend(p.scores.values())
        return {"name": name, "shape": [n, width], "datatype": "FP64", "data": data}
    if len(spec.shape) == 2:  # multi-output: one row of `width` values per input
        width = spec.shape[1]
        for p in results:
            label = p.label if isinstance(p.label, list) else [p.label]
            if model.task == "tabular-multilabel" and model.indicator:
                on = set(label)
                data.extend(1 if j in on else 0 for j in range(width))
            else:
                data.extend(_label_value(v, spec.datatype) for v in label)
        return {"name": name, "shape": [n, width], "datatype": spec.datatype, "data": data}
    values = [_label_value(p.label, spec.datatype) for p in results]
    return {"name": name, "shape": [n], "datatype": spec.datatype, "data": values}
