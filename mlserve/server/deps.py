"""Dependencies: the app's state reached through one Annotated alias each."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlserve.config import Settings
from mlserve.serving.manager import ModelManager
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mlserve
    return state


async def get_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.mlserve.manager
    return manager


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.mlserve.settings
    return settings


async def get_metrics(request: Request) -> ServerMetrics:
    metrics: ServerMetrics = request.app.state.metrics
    return metrics


StateDep = Annotated[AppState, Depends(get_state)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
