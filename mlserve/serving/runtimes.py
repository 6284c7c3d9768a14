"""What a server process holds per model: its runtimes (a loaded version and its batcher)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from mlserve.registry import ModelRef
from mlserve.runtime.batcher import Batcher
from mlserve.runtime.model import LoadedModel, Prediction
from mlserve.schemas import ModelMetadata

ServedStatus = Literal["loading", "loaded", "failed", "unloaded"]
InputKind = Literal["text", "tabular"]
"""What a model takes (InputSchema.kind), and what a request sends: text, or features."""
KIND_FIELDS: dict[InputKind, str] = {"text": "text", "tabular": "features"}


def default_choice(
    kinds: Mapping[str, InputKind | None], kind: InputKind | None
) -> str | list[str]:
    """The model a request of input `kind` goes to when it names none and no default model is
    set: the only model, else the only one taking `kind`. Otherwise the candidates (sorted) to
    name in the error: the models taking `kind`, or every model when none (or no kind) fits.
    `kinds` maps each model to what it takes (None: unknown, it is nobody's default)."""
    if len(kinds) == 1:
        return next(iter(kinds))
    if kind is None:
        return sorted(kinds)
    fits = sorted(name for name, takes in kinds.items() if takes == kind)
    if len(fits) == 1:
        return fits[0]
    return fits or sorted(kinds)


@dataclass(eq=False)
class Runtime:
    """One loaded model version and its batcher."""

    model: LoadedModel
    batcher: Batcher[Prediction]
    loaded_at: datetime
    warnings: list[str] = field(default_factory=list)
    predictions: int = 0
    retired: bool = False
    # Estimated memory (server.memory_budget_mb) and the manager's tick of its last lookup
    # (least recently used runtimes are unloaded first).
    estimated_bytes: int = 0
    last_used: int = 0

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def degraded(self) -> bool:
        """Failing fast after consecutive failed predictions (its circuit breaker tripped)."""
        breaker = self.batcher.breaker
        return breaker is not None and breaker.tripped


@dataclass(eq=False)
class ServedModel:
    """A model name the server answers for, and the reference it follows (name@alias, name:3)."""

    name: str
    ref: ModelRef
    status: ServedStatus = "loading"
    current: Runtime | None = None
    error: str | None = None
    extra: collections.OrderedDict[int, Runtime] = field(default_factory=collections.OrderedDict)
    aliases: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Versions kept loaded whatever requests name (A/B split and shadow versions).
    pinned: frozenset[int] = frozenset()
    aliases_read_at: float = float("-inf")  # last re-read because a request missed an alias
    # What the serving version takes, from the registry metadata (known before it loads).
    kind: InputKind | None = None
    kind_read_at: float = float("-inf")  # last metadata read for an unknown kind
    # Not loaded because of server.max_loaded / memory_budget_mb (at startup, or unloaded to
    # make room): the next request loads it. Unlike an unload through the repository API.
    on_demand: bool = False

    @property
    def health(self) -> tuple[str, str | None]:
        """(status, error) for /api/models: the served status, or "degraded" (with the
        reason) while the serving version fails fast."""
        current = self.current
        if current is not None and current.degraded:
            breaker = current.batcher.breaker
            assert breaker is not None  # noqa: S101 - degraded implies a breaker
            return "degraded", f"version {current.version}: {breaker.reason}"
        return self.status, self.error


def loaded_runtimes(served: ServedModel) -> list[Runtime]:
    """The runtimes of one model: its serving version, then the extra versions."""
    out = [served.current] if served.current is not None else []
    out.extend(served.extra.values())
    return out


def loaded_metadata(models: Mapping[str, ServedModel]) -> list[ModelMetadata]:
    """The metadata of every version loaded in `models` (a ModelManager's): what
    `mlserve_model_info` exports. Safe from a thread other than the one that changes
    `models` (the worker's metrics server reads it while its event loop loads models): the
    dicts are copied by list() in one step under the GIL, never iterated while they change."""
    return [rt.model.metadata for served in list(models.values()) for rt in loaded_runtimes(served)]
