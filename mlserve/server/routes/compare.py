"""Compare route: one input asked of several models at once, each answering on its own."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from mlserve.errors import InvalidInputError, MlserveError
from mlserve.schemas import CompareRequest, CompareResponse, ErrorBody, ErrorResponse
from mlserve.server.deps import SettingsDep, StateDep
from mlserve.server.errors import public_message, server_roots
from mlserve.server.jsonbody import JSONRoute
from mlserve.server.scope import client_key
from mlserve.serving.service import InputKind, PredictionService, input_kind, prediction_fields
from mlserve.serving.state import AppState

__all__ = ["compare", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["predict"], route_class=JSONRoute)

# Request-level errors only: one model's error (unknown, unfit input, failed, not loaded) is
# that model's item of a 200 answer.
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Request body over server.max_body_bytes."},
    422: {
        "model": ErrorResponse,
        "description": "Invalid request: not exactly one of text or features, a blank or "
        "too long text, no models, a model named twice, or more models than the limit.",
    },
}


def check_text(text: str | None, limit: int) -> None:
    """The text checks that hold for every model (the schema says them), made once for the
    request rather than once per model."""
    if text is None:
        return
    if not text or text.isspace():
        raise InvalidInputError("'text' cannot be empty or whitespace only")
    if len(text) > limit:
        raise InvalidInputError(f"'text' is {len(text)} characters; the limit is {limit}")


async def ask_one(
    state: AppState,
    scope: Scope,
    reference: str,
    body: CompareRequest,
    kind: InputKind,
    prediction_id: str,
) -> dict[str, Any]:
    """One model's item: its answer, or its error rendered as every error is (the message a
    client may see, a 5xx logged with the request id; anything unexpected is an opaque 500
    with the traceback in the log)."""
    started = time.perf_counter()
    service: PredictionService = state.service
    request_id = scope["state"]["request_id"]
    try:
        runtime = await service.choose(reference, None, lambda: client_key(scope), kind=kind)
        scored = await service.predict(
            runtime, text=body.text, features=body.features, request_id=prediction_id
        )
    except MlserveError as exc:
        message = public_message(exc, scope, server_roots(state))
        error = ErrorBody(code=exc.code, message=message, request_id=request_id)
        return {"model": reference, "error": error.model_dump()}
    except Exception:
        log.exception(
            "[%s] model %s failed in a comparison",
            request_id,
            reference,
            extra={"request_id": request_id},
        )
        error = ErrorBody(
            code="internal_error", message="internal server error", request_id=request_id
        )
        return {"model": reference, "error": error.model_dump()}
    return {
        "model": reference,
        "version": scored.runtime.model.version,
        **prediction_fields(scored.prediction),
        "processing_time_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "id": prediction_id,
    }


@router.post(
    "/predict/compare",
    response_model=CompareResponse,
    responses=ERRORS,
    summary="Predict one input with several models",
)
async def compare(
    body: CompareRequest, request: Request, state: StateDep, settings: SettingsDep
) -> Response:
    """Ask several models (at most 10) about one text or one row of features, all at once.

    Each item of `results` (in the order of `models`) is that model's answer, or its error
    (`{"model", "error"}`: unknown model 404, an input it cannot take 422, a failure 500, not
    loaded 503): one model's failure does not fail the others. A bare name with an A/B split
    answers from the client's bucket, as on POST /api/predict. Each answer's `id`
    (`<request_id>-<index>`) names it for POST /api/feedback."""
    kind = input_kind(body.text, body.features)
    check_text(body.text, settings.server.max_text_length)
    scope = request.scope
    request_id = scope["state"]["request_id"]
    results = await asyncio.gather(
        *(
            ask_one(state, scope, reference, body, kind, f"{request_id}-{i}")
            for i, reference in enumerate(body.models)
        )
    )
    payload = {"results": results, "request_id": request_id}
    return Response(orjson.dumps(payload), media_type="application/json")
