"""Prediction routes: one input, or a batch scored in one vectorized call."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlserve.errors import InvalidInputError
from mlserve.runtime.model import Prediction
from mlserve.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
)
from mlserve.server.deps import MetricsDep, SettingsDep, StateDep
from mlserve.server.jsonbody import JSONRoute
from mlserve.server.manager import Runtime
from mlserve.server.metrics import ServerMetrics

router = APIRouter(prefix="/api", tags=["predict"], route_class=JSONRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model, version or alias."},
    413: {"model": ErrorResponse, "description": "Request body over server.max_body_bytes."},
    422: {"model": ErrorResponse, "description": "Invalid input (the message names the field)."},
    500: {"model": ErrorResponse, "description": "The model failed to predict."},
    503: {"model": ErrorResponse, "description": "Model not loaded, or its queue is full."},
}


class JSONBytes(Response):
    media_type = "application/json"


def _item(p: Prediction) -> dict[str, Any]:
    return {"prediction": p.label, "confidence": p.confidence, "probabilities": p.probabilities}


def _count(metrics: ServerMetrics, runtime: Runtime, predictions: list[Prediction]) -> None:
    runtime.predictions += len(predictions)
    name, version = runtime.model.name, str(runtime.model.version)
    for p in predictions:
        metrics.predictions.labels(name, version, str(p.label)).inc()


def _mark(request: Request, runtime: Runtime) -> None:
    state = request.scope.setdefault("state", {})
    state["model"] = runtime.model.name
    state["version"] = runtime.model.version


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Predict one input",
)
async def predict(
    body: PredictRequest, request: Request, state: StateDep, metrics: MetricsDep
) -> Response:
    """Predict the class (or value) of one text or one row of features.

    Without an explicit version, a model with an A/B split answers from the version of the
    client's bucket (X-Client-ID, else API key, else address); `version` says which did.
    With the prediction cache on, X-Cache says hit or miss."""
    started = time.perf_counter()
    if (body.text is None) == (body.features is None):
        raise InvalidInputError("send exactly one of 'text' or 'features'")
    traffic = state.traffic
    runtime = await traffic.select(body.model, body.model_version, request.scope)
    _mark(request, runtime)
    row = runtime.model.prepare(text=body.text, features=body.features)
    result, hit = await traffic.predict(runtime, row)
    _count(metrics, runtime, [result])
    if traffic.shadows:
        traffic.mirror(runtime, [row], [result])
    model = runtime.model
    request_id = request.scope["state"]["request_id"]
    if state.feedback is not None:  # as the fast path records it (fastpath.py)
        state.feedback.record(request_id, model.name, model.version, row, result)
    payload = _item(result)
    payload.update(
        model=model.name,
        version=model.version,
        processing_time_ms=round((time.perf_counter() - started) * 1000.0, 3),
        request_id=request_id,
    )
    headers = None if hit is None else {"X-Cache": "hit" if hit else "miss"}
    return JSONBytes(orjson.dumps(payload), headers=headers)


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=ERRORS,
    summary="Predict a batch of inputs",
)
async def predict_batch(
    body: BatchPredictRequest,
    request: Request,
    state: StateDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> Response:
    """Score up to server.max_batch_items texts or records in one vectorized model call.

    Each row's `id` (`<request_id>-<index>`) names its prediction for POST /api/feedback.
    With the prediction cache on, cached rows are answered from it and the rest go to the
    model in one call; X-Cache-Hits says how many rows hit."""
    started = time.perf_counter()
    if (body.texts is None) == (body.records is None):
        raise InvalidInputError("send exactly one of 'texts' or 'records'")
    inputs: list[Any] = body.texts if body.texts is not None else body.records  # type: ignore[assignment]
    field = "texts" if body.texts is not None else "records"
    limit = settings.server.max_batch_items
    if not inputs:
        raise InvalidInputError(f"'{field}' is empty; send 1 to {limit} items")
    if len(inputs) > limit:
        raise InvalidInputError(
            f"'{field}' has {len(inputs)} items; the limit is {limit} (server.max_batch_items)"
        )
    traffic = state.traffic
    runtime = await traffic.select(body.model, body.model_version, request.scope)
    _mark(request, runtime)
    model = runtime.model
    if body.texts is not None:
        rows = [model.prepare(text=t, field=f"texts.{i}") for i, t in enumerate(inputs)]
    else:
        rows = [model.prepare(features=r, field=f"records.{i}") for i, r in enumerate(inputs)]
    results, hits = await traffic.predict_many(runtime, rows)
    _count(metrics, runtime, results)
    if traffic.shadows:
        traffic.mirror(runtime, rows, results)
    request_id = request.scope["state"]["request_id"]
    if state.feedback is not None:  # each row as <request_id>-<index>, its `id` below
        state.feedback.record_many(request_id, model.name, model.version, rows, results)
    payload = {
        "predictions": [{"id": f"{request_id}-{i}", **_item(p)} for i, p in enumerate(results)],
        "model": model.name,
        "version": model.version,
        "batch_size": len(results),
        "total_processing_time_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "request_id": request_id,
    }
    headers = None if hits is None else {"X-Cache-Hits": str(hits)}
    return JSONBytes(orjson.dumps(payload), headers=headers)
