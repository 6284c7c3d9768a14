"""A model's canary rollout (PUT/GET/DELETE /api/models/{name}/rollout)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from mlserve.schemas.common import INTEGRAL

__all__ = [
    "DEFAULT_STEPS",
    "GuardFigure",
    "GuardName",
    "GuardStatus",
    "RolloutEventInfo",
    "RolloutGuards",
    "RolloutInfo",
    "RolloutRequest",
    "VersionFigure",
]

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
MAX_STEPS = 20
GuardName = Literal["error_rate", "p99_ms", "accuracy"]
GuardStatus = Literal["ok", "waiting", "breached", "off"]
RolloutStatusName = Literal["running", "promoted", "rolled_back", "aborted"]

ROLLOUT_EXAMPLE: dict[str, JsonValue] = {
    "candidate": 2,
    "steps": [5, 25, 50, 100],
    "step_seconds": 300,
    "min_requests": 200,
    "min_labels": 0,
    "guards": {"max_error_rate": 0.01, "max_p99_ms": 250, "max_accuracy_drop": 0.02},
}


def _figure(
    limit: float | None, status: str, cand: tuple[float, int], base: tuple[float, int]
) -> JsonValue:
    return {
        "limit": limit,
        "status": status,
        "candidate": {"value": cand[0], "n": cand[1]},
        "baseline": {"value": base[0], "n": base[1]},
    }


ROLLOUT_INFO_EXAMPLE: dict[str, JsonValue] = {
    "model": "sentiment",
    "id": "3f0c9a4e1b2d4c6f8a7e5d3c2b1a0f9e",
    "status": "running",
    "alias": "production",
    "baseline": 1,
    "candidate": 2,
    "steps": [5.0, 25.0, 50.0, 100.0],
    "step": 1,
    "weight": 25.0,
    "step_seconds": 300.0,
    "min_requests": 200,
    "min_labels": 100,
    "guards": {"max_error_rate": 0.01, "max_p99_ms": 250.0, "max_accuracy_drop": 0.02},
    "started_at": "2026-12-03T10:00:00Z",
    "step_started_at": "2026-12-03T10:05:02Z",
    "ended_at": None,
    "next_step_in_s": 112.5,
    "reason": None,
    "figures": {
        "error_rate": _figure(0.01, "ok", (0.0021, 477), (0.0018, 1431)),
        "p99_ms": _figure(250.0, "ok", (18.2, 477), (16.9, 1431)),
        "accuracy": _figure(0.02, "waiting", (0.91, 64), (0.9, 412)),
    },
    "events": [
        {"at": "2026-12-03T10:00:00Z", "event": "started", "step": 0, "weight": 5.0,
         "detail": ""},
        {"at": "2026-12-03T10:05:02Z", "event": "step", "step": 1, "weight": 25.0,
         "detail": "step 1 passed its guards"},
    ],
}  # fmt: skip


class RolloutGuards(BaseModel):
    """The limits the candidate is held to at every step; null turns a guard off."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=0.01,
        description="Highest share of the candidate's predictions that may fail (5xx), e.g. "
        "0.01. Breached when the candidate is over it and worse than the baseline.",
    )
    max_p99_ms: Annotated[float, Field(gt=0, le=600_000)] | None = Field(
        default=None,
        description="Highest p99 latency (ms) of the candidate's predictions. Breached when "
        "the candidate is over it and slower than the baseline. null (default): off.",
    )
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=0.02,
        description="How far the candidate's live accuracy (from feedback labels) may fall "
        "below the baseline's; judged only when min_labels > 0, once both versions have that "
        "many labels, and only when a one-sided test at 95 % says the drop is larger.",
    )


class RolloutRequest(BaseModel):
    """Start a canary rollout: send a growing share of the model's traffic to `candidate`,
    judged against the version the alias names now; promote at the end, roll back on a
    breach."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ROLLOUT_EXAMPLE]})

    candidate: Annotated[int, Field(ge=1), INTEGRAL] = Field(description="The version to release.")
    alias: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_-]*[a-z_-][a-z0-9_-]*$",
        max_length=64,
        description="The alias moved to the candidate at the end, and whose version is the "
        "baseline. Default: server.default_alias (production).",
    )
    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        min_length=1,
        max_length=MAX_STEPS,
        description="The candidate's share of traffic at each step, percent (sorted; a last "
        "step of 100 is added when missing).",
    )
    step_seconds: Annotated[float, Field(ge=0.1, le=7 * 86400)] = Field(
        default=300.0, description="How long each step lasts at least."
    )
    min_requests: Annotated[int, Field(ge=1, le=10_000_000), INTEGRAL] = Field(
        default=200,
        description="Predictions the candidate must have answered in a step before the error "
        "and latency guards judge it (and before the step can end).",
    )
    min_labels: Annotated[int, Field(ge=0, le=10_000_000), INTEGRAL] = Field(
        default=0,
        description="Feedback labels each version needs before the accuracy guard judges; "
        "0: no accuracy guard.",
    )
    guards: RolloutGuards = Field(default_factory=RolloutGuards)

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[float]) -> list[float]:
        # Sorted and deduplicated, ending at 100: [50, 5, 25] is 5, 25, 50, 100.
        ordered = sorted(set(steps))
        return ordered if ordered[-1] == 100 else [*ordered, 100.0]


class VersionFigure(BaseModel):
    """One version's figure for one guard, and the sample it is computed from."""

    value: float | None = Field(description="null: no sample yet.")
    n: int = Field(description="Requests (error rate, latency) or labels (accuracy).")


class GuardFigure(BaseModel):
    """One guard at the latest evaluation."""

    limit: float | None
    status: GuardStatus = Field(
        description="ok; waiting (a sample under its minimum); breached; off."
    )
    candidate: VersionFigure
    baseline: VersionFigure


class RolloutEventInfo(BaseModel):
    at: datetime
    event: Literal["started", "step", "waiting", "promoted", "rolled_back", "aborted"]
    step: int = Field(description="Index into steps (0 is the first).")
    weight: float = Field(description="The candidate's share of traffic then, percent.")
    detail: str = ""


class RolloutInfo(BaseModel):
    """A model's rollout: where it is, what its guards say, and what happened."""

    model_config = ConfigDict(json_schema_extra={"examples": [ROLLOUT_INFO_EXAMPLE]})

    model: str
    id: str
    status: RolloutStatusName
    alias: str
    baseline: int
    candidate: int
    steps: list[float]
    step: int = Field(description="Index into steps of the current (or last) step.")
    weight: float = Field(description="The candidate's share of traffic now, percent.")
    step_seconds: float
    min_requests: int
    min_labels: int
    guards: RolloutGuards
    started_at: datetime
    step_started_at: datetime
    ended_at: datetime | None = None
    next_step_in_s: float | None = Field(
        default=None,
        description="Seconds until the step may end (it also waits for its minimum samples); "
        "null once ended.",
    )
    reason: str | None = Field(default=None, description="Why it was rolled back or aborted.")
    figures: dict[GuardName, GuardFigure] = Field(
        default_factory=dict, description="Each guard at the latest evaluation."
    )
    events: list[RolloutEventInfo] = Field(default_factory=list)
