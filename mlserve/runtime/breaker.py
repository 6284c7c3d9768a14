"""Circuit breaker for one model version: consecutive failed model calls make it fail fast."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlserve.errors import ModelUnavailableError

BreakerState = Literal["closed", "open", "half_open"]


class ModelDegradedError(ModelUnavailableError):
    """The model version failed too often in a row; it is not called until its cooldown ends."""

    code = "model_degraded"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    failure_threshold: int = 5
    cooldown_s: float = 30.0


class CircuitBreaker:
    """closed → (failure_threshold consecutive failures) → open: calls are refused for
    cooldown_s → half-open: one call goes through; its success closes the breaker, its
    failure opens it again. A probe that never reports (its caller went away) is replaced by
    a new one after another cooldown. Knows nothing of HTTP; the clock is injectable."""

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.on_change = on_change  # called with True when it trips, False when it closes
        self.failures = 0  # consecutive failed calls
        self.opened_at: float | None = None  # None: closed
        self._probe_at: float | None = None  # when the half-open probe was let through
        self.reason: str | None = None

    @property
    def tripped(self) -> bool:
        """Open or half-open: the version is degraded (the cheap check on the request path)."""
        return self.opened_at is not None

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at < self.config.cooldown_s:
            return "open"
        return "half_open"

    def retry_after(self) -> float:
        """Seconds until a call may be let through again (0 when closed)."""
        if self.opened_at is None:
            return 0.0
        start = self._probe_at if self._probe_at is not None else self.opened_at
        return max(0.0, start + self.config.cooldown_s - self.clock())

    def check(self) -> None:
        """Raise ModelDegradedError unless a call may go to the model now."""
        if self.opened_at is None:
            return
        now = self.clock()
        if now - self.opened_at >= self.config.cooldown_s and (
            self._probe_at is None or now - self._probe_at >= self.config.cooldown_s
        ):
            self._probe_at = now  # half-open: this caller is the probe
            return
        raise self.error()

    def error(self) -> ModelDegradedError:
        """The fail-fast answer while the breaker is open."""
        wait = self.retry_after()
        return ModelDegradedError(
            f"model {self.name} is degraded ({self.reason}); it is tried again in "
            f"{max(1, round(wait))} s",
            retry_after=max(1.0, wait),
        )

    def record_success(self) -> None:
        was_tripped = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self._probe_at = None
        self.reason = None
        if was_tripped and self.on_change is not None:
            self.on_change(False)

    def record_failure(self) -> bool:
        """Count a failed model call; True when this failure opened (or re-opened) the breaker."""
        self.failures += 1
        if self.opened_at is not None:
            if self._probe_at is None:
                return False  # a call admitted before the breaker opened: already open
            # The half-open probe failed: another full cooldown.
            self.opened_at = self.clock()
            self._probe_at = None
            return True
        if self.failures >= self.config.failure_threshold:
            self.opened_at = self.clock()
            self.reason = f"{self.failures} consecutive failed predictions"
            if self.on_change is not None:
                self.on_change(True)
            return True
        return False
