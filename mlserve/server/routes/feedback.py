"""Feedback routes: true labels for remembered predictions, and the live quality they give."""

from __future__ import annotations

import collections
from typing import Any

from fastapi import APIRouter, Query

from mlserve.errors import InvalidInputError
from mlserve.feedback import FeedbackDisabledError, InvalidLabelError, PredictionNotFoundError
from mlserve.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackResult,
    QualityReport,
)
from mlserve.server.deps import SettingsDep, StateDep
from mlserve.server.jsonbody import JSONRoute
from mlserve.server.routes.models import NameParam
from mlserve.serving.quality import QualityService
from mlserve.serving.state import AppState

router = APIRouter(prefix="/api", tags=["feedback"], route_class=JSONRoute)

UNAVAILABLE = {
    "model": ErrorResponse,
    "description": "The feedback store cannot be reached (feedback_unavailable).",
}
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorResponse,
        "description": "One label: no prediction with this id is kept — never made, or older "
        "than feedback.retention_s (prediction_not_found); or feedback is off "
        "(feedback_disabled).",
    },
    422: {
        "model": ErrorResponse,
        "description": "Malformed body (invalid_input); one label: not a class of the "
        "prediction's model (invalid_label).",
    },
    503: UNAVAILABLE,
}
QUALITY_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model or version; feedback is off."},
    503: UNAVAILABLE,
}


def _service(state: AppState) -> QualityService:
    if state.quality is None:
        raise FeedbackDisabledError("feedback is off on this server (feedback.enabled = false)")
    return state.quality


@router.post(
    "/feedback",
    response_model=FeedbackResult | FeedbackResponse,
    responses=FEEDBACK_ERRORS,
    summary="Send true labels of predictions",
)
async def feedback(
    body: FeedbackRequest, state: StateDep, settings: SettingsDep
) -> FeedbackResult | FeedbackResponse:
    """Store the true label of a prediction, named by its id (a response's request_id; the
    `id` of a batch row). A later label for the same prediction replaces the earlier one.

    One label (`request_id`, `label`): 200 with the result; 404 prediction_not_found for an
    unknown or expired id; 422 invalid_label for a label that is not a class of the model.
    Several (`items`): 200 with one result per item (accepted, replaced, unknown or invalid)
    and the counts of each; the valid ones are stored even when others are not."""
    service = _service(state)
    single = body.request_id is not None or body.label is not None
    if single and body.items is not None:
        raise InvalidInputError("send either 'request_id' and 'label', or 'items', not both")
    if single:
        if body.request_id is None or body.label is None:
            missing = "label" if body.label is None else "request_id"
            raise InvalidInputError(f"{missing}: field required")
        (result,) = await service.submit([(body.request_id, body.label)])
        if result.outcome == "unknown":
            raise PredictionNotFoundError(result.error or "unknown prediction")
        if result.outcome == "invalid":
            raise InvalidLabelError(result.error or "invalid label")
        return result
    items = body.items
    limit = settings.feedback.max_items
    if not items:
        raise InvalidInputError(
            "send 'request_id' and 'label', or 'items' with 1 to "
            f"{limit} labels (feedback.max_items)"
        )
    if len(items) > limit:
        raise InvalidInputError(
            f"'items' has {len(items)} labels; the limit is {limit} (feedback.max_items)"
        )
    results = await service.submit([(item.request_id, item.label) for item in items])
    counts = collections.Counter(r.outcome for r in results)
    return FeedbackResponse(
        accepted=counts["accepted"],
        replaced=counts["replaced"],
        unknown=counts["unknown"],
        invalid=counts["invalid"],
        items=results,
    )


@router.get(
    "/models/{name}/quality",
    response_model=QualityReport,
    responses=QUALITY_ERRORS,
    summary="Live quality and drift of a model",
)
async def quality(
    state: StateDep,
    name: str = NameParam,
    version: int | None = Query(
        default=None,
        ge=1,
        description="Only this version (default: every version with "
        "remembered predictions, and the serving one).",
    ),  # fmt: skip
    window: int | None = Query(
        default=None,
        ge=1,
        le=1_000_000,
        description="N of the rolling figures: the last N labelled predictions "
        "(default feedback.window).",
    ),  # fmt: skip
) -> QualityReport:
    """Per version: labelled predictions, rolling accuracy and macro-F1 (last N labels and
    the last 1h, 24h, 7d), the confusion matrix, and drift — the population stability index
    of recent predicted classes and confidences against the hold-out set's — next to the
    figures recorded at training time."""
    return await _service(state).report(name, version, window)
