"""Canary rollouts (PUT and DELETE: admin role): start, watch and abort a model's rollout.

The rollout lives in the rollout store, so every replica sharing it follows the same steps
(serving/rollout.py); any replica answers these routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from mlserve.schemas import ErrorResponse, RolloutInfo, RolloutRequest
from mlserve.server.deps import StateDep
from mlserve.server.jsonbody import JSONRoute

router = APIRouter(prefix="/api/models", tags=["rollouts"], route_class=JSONRoute)

NameParam = Path(description="Model name.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "The rollout store cannot be reached."},
}
START_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorResponse,
        "description": "Model, candidate version or alias not found.",
    },
    409: {
        "model": ErrorResponse,
        "description": "A rollout is running, the model has a manual A/B split, or the "
        "candidate is already what the alias names.",
    },
    422: {"model": ErrorResponse, "description": "Invalid plan."},
    500: {"model": ErrorResponse, "description": "A version failed to load; nothing started."},
    **UNAVAILABLE,
}


@router.put(
    "/{name}/rollout",
    response_model=RolloutInfo,
    status_code=201,
    responses=START_ERRORS,
    summary="Start a canary rollout",
)
async def put_rollout(body: RolloutRequest, state: StateDep, name: str = NameParam) -> RolloutInfo:
    """Send a growing share of the model's traffic to `candidate`, step by step, judging it
    against the version the alias names now: promoted (the alias moves) after the last step,
    rolled back at once on a guard breach. Every replica follows it (admin role)."""
    rollouts = state.rollouts
    started = await rollouts.begin(name, body)
    return RolloutInfo.model_validate(rollouts.describe(started))


@router.get(
    "/{name}/rollout",
    response_model=RolloutInfo,
    responses={
        404: {"model": ErrorResponse, "description": "The model has no rollout."},
        **UNAVAILABLE,
    },
    summary="Show a model's rollout",
)
async def get_rollout(state: StateDep, name: str = NameParam) -> RolloutInfo:
    """The running (or latest) rollout: step, weight, each guard's figures for candidate and
    baseline with their sample sizes, time to the next step, and its events."""
    rollouts = state.rollouts
    return RolloutInfo.model_validate(rollouts.describe(await rollouts.status(name)))


@router.delete(
    "/{name}/rollout",
    response_model=RolloutInfo,
    responses={
        404: {"model": ErrorResponse, "description": "The model has no rollout."},
        409: {"model": ErrorResponse, "description": "The rollout already ended."},
        **UNAVAILABLE,
    },
    summary="Abort a model's rollout",
)
async def delete_rollout(state: StateDep, name: str = NameParam) -> RolloutInfo:
    """Stop the running rollout: the baseline serves everyone again, the alias stays where it
    was (admin role)."""
    rollouts = state.rollouts
    return RolloutInfo.model_validate(rollouts.describe(await rollouts.abort(name)))
