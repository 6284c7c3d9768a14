"""Bounded waits: poll a condition until it holds or a deadline passes (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    what: str,
    timeout: float = 10.0,
    *,
    details: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> T:
    """Poll `check` until it returns something true and return that; a connection refused
    (a server not up yet, or restarting) counts as not yet. Past `timeout` seconds, fail
    naming `what`, with `details()` (a log tail, say) when given."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s{extra}")
        time.sleep(interval)  # polling interval of a bounded wait


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """In a coroutine: poll `condition` every 10 ms (letting the loop run) until it holds;
    past `timeout` seconds, fail naming `what`."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
