"""A clock the test moves by hand, for code that takes a clock (time.monotonic or time.time)."""

from __future__ import annotations


class Clock:
    """Returns `now` when called; `advance(seconds)` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
