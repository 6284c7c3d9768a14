"""Request ids: time-ordered, unpredictable, cheap."""

from __future__ import annotations

import os
import time

__all__ = ["new_request_id"]


class _RandomHex:
    """Random hex digits drawn from the OS in blocks: one os.urandom call per REFILL ids
    instead of one per request (a system call each), the digits just as unpredictable."""

    REFILL = 256
    DIGITS = 20  # 80 bits

    def __init__(self) -> None:
        self.block = ""
        self.offset = 0

    def take(self) -> str:
        offset = self.offset
        if offset >= len(self.block):
            self.block = os.urandom(self.REFILL * self.DIGITS // 2).hex()
            offset = 0
        self.offset = offset + self.DIGITS
        return self.block[offset : offset + self.DIGITS]


_random_hex = _RandomHex()


def _reset_after_fork() -> None:
    _random_hex.block = ""  # a forked child must not reuse its parent's digits
    _random_hex.offset = 0


os.register_at_fork(after_in_child=_reset_after_fork)


def new_request_id() -> str:
    """32 hex digits, time-ordered like a UUIDv7 (48-bit Unix milliseconds, then 80 random
    bits): ids sort by time in logs, and the feedback store's id index is appended to rather
    than written at random places (about 3x cheaper per recorded prediction). Unpredictable,
    as feedback names a prediction by its id. Called on the event loop only."""
    return f"{time.time_ns() // 1_000_000:012x}{_random_hex.take()}"
