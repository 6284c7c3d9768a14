"""Rollout states and window counts the rollout-store tests build (SQLite and Redis alike)."""

from __future__ import annotations

from typing import Any

from mlserve.rollouts import RolloutEvent, RolloutPlan, RolloutState, WindowCounts, new_rollout_id

START = 1_700_000_000.0


def running_state(model: str = "iris", *, steps: tuple[float, ...] = (5.0, 50.0, 100.0)) -> Any:
    """A fresh running rollout of `model` (revision 0: not stored yet)."""
    return RolloutState(
        id=new_rollout_id(),
        plan=RolloutPlan(model=model, alias="production", baseline=1, candidate=2, steps=steps),
        status="running",
        step=0,
        started_at=START,
        step_started_at=START,
        events=(RolloutEvent(at=START, event="started", step=0, weight=steps[0]),),
    )


def next_step(state: RolloutState) -> RolloutState:
    event = RolloutEvent(at=START + 300, event="step", step=state.step + 1, weight=50.0)
    return state.with_event(event, step=state.step + 1, step_started_at=START + 300)


def ended(state: RolloutState, status: Any = "promoted") -> RolloutState:
    event = RolloutEvent(at=START + 900, event=status, step=state.step, weight=0.0)
    return state.with_event(event, status=status, ended_at=START + 900, reason="test")


def counts(requests: int, errors: int = 0, seconds: float = 0.01) -> WindowCounts:
    window = WindowCounts()
    window.observe(seconds, failed=False, n=requests - errors)
    if errors:
        window.observe(seconds, failed=True, n=errors)
    return window
