"""Prediction routes: one input, or a batch scored in one vectorized call."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from mlserve.errors import InvalidInputError
from mlserve.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
)
from mlserve.server.deps import SettingsDep, StateDep
from mlserve.server.jsonbody import JSONRoute
from mlserve.server.scope import client_key, mark_model
from mlserve.serving.service import (
    InputKind,
    PredictionService,
    Scored,
    input_kind,
    prediction_fields,
)

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


def predict_payload(scored: Scored, request_id: str | None, started: float) -> dict[str, Any]:
    """The /api/predict answer (the fast lane renders the same dict)."""
    model = scored.runtime.model
    payload = prediction_fields(scored.prediction)
    payload["model"] = model.name
    payload["version"] = model.version
    payload["processing_time_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    payload["request_id"] = request_id
    return payload


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Predict one input",
)
async def predict(body: PredictRequest, request: Request, state: StateDep) -> Response:
    """Predict the class (or value) of one text or one row of features.

    Without `model`, the server's default answers: server.default_model, else the only served
    model taking text (or features); 422 names the candidates when several do.
    Without an explicit version, a model with an A/B split answers from the version of the
    client's bucket (X-Client-ID, else API key, else address); `version` says which did.
    With the prediction cache on, X-Cache says hit or miss."""
    started = time.perf_counter()
    scope = request.scope
    service = state.service
    kind = input_kind(body.text, body.features)
    runtime = await service.choose(
        body.model, body.model_version, lambda: client_key(scope), kind=kind
    )
    mark_model(scope, runtime)
    request_id = scope["state"]["request_id"]
    scored = await service.predict(
        runtime, text=body.text, features=body.features, request_id=request_id
    )
    if scored.runtime is not runtime:  # the serving version answered for a degraded split pick
        mark_model(scope, scored.runtime)
    hit = scored.cache_hit
    headers = None if hit is None else {"X-Cache": "hit" if hit else "miss"}
    return JSONBytes(orjson.dumps(predict_payload(scored, request_id, started)), headers=headers)


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=ERRORS,
    summary="Predict a batch of inputs",
)
async def predict_batch(
    body: BatchPredictRequest, request: Request, state: StateDep, settings: SettingsDep
) -> Response:
    """Score up to server.max_batch_items texts or records in one vectorized model call.

    Each row's `id` (`<request_id>-<index>`) names its prediction for POST /api/feedback.
    With the prediction cache on, cached rows are answered from it and the rest go to the
    model in one call; X-Cache-Hits says how many rows hit."""
    payload, hits = await score_batch(
        body, request.scope, state.service, settings.server.max_batch_items, time.perf_counter()
    )
    headers = None if hits is None else {"X-Cache-Hits": str(hits)}
    return JSONBytes(orjson.dumps(payload), headers=headers)


async def score_batch(
    body: BatchPredictRequest,
    scope: Scope,
    service: PredictionService,
    limit: int,
    started: float,
) -> tuple[dict[str, Any], int | None]:
    """The /api/predict/batch answer and its cache hits (None: no cache); the route and the
    fast lane both answer through it. `limit` is server.max_batch_items."""
    if (body.texts is None) == (body.records is None):
        raise InvalidInputError("send exactly one of 'texts' or 'records'")
    inputs: list[Any] = body.texts if body.texts is not None else body.records  # type: ignore[assignment]
    field = "texts" if body.texts is not None else "records"
    if not inputs:
        raise InvalidInputError(f"'{field}' is empty; send 1 to {limit} items")
    if len(inputs) > limit:
        raise InvalidInputError(
            f"'{field}' has {len(inputs)} items; the limit is {limit} (server.max_batch_items)"
        )
    kind: InputKind = "text" if body.texts is not None else "tabular"
    runtime = await service.choose(
        body.model, body.model_version, lambda: client_key(scope), kind=kind
    )
    mark_model(scope, runtime)
    model = runtime.model
    if body.texts is not None:
        rows = [model.prepare(text=t, field=f"texts.{i}") for i, t in enumerate(inputs)]
    else:
        rows = [model.prepare(features=r, field=f"records.{i}") for i, r in enumerate(inputs)]
    request_id = scope["state"]["request_id"]
    scored = await service.predict_rows(runtime, rows, request_id=request_id)
    if scored.runtime is not runtime:  # the serving version answered for a degraded split pick
        mark_model(scope, scored.runtime)
        model = scored.runtime.model
    payload = {
        "predictions": [
            {"id": f"{request_id}-{i}", **prediction_fields(p)}
            for i, p in enumerate(scored.predictions)
        ],
        "model": model.name,
        "version": model.version,
        "batch_size": len(scored.predictions),
        "total_processing_time_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "request_id": request_id,
    }
    return payload, scored.cache_hits
