"""server.events_per_turn: how many ready sockets the event loop takes per turn.

asyncio asks epoll for every ready socket at once, so with 2,000 busy connections one turn reads
and parses up to 2,000 requests before the work already under way (a task whose prediction came
back, an answer to write) runs again. Under overload that made every admitted request wait
several such turns (seconds) and kept thousands of requests in memory at once. Taking at most
`events_per_turn` sockets per turn lets the work in flight finish between them; the other
requests wait, unread, in the kernel's buffers, which costs the process nothing. epoll hands
out ready sockets in turn (a socket reported goes to the back of its ready list), so none
waits for good (docs/benchmarks.md, "Sixth pass").

Only asyncio's epoll loop (Linux) is capped; uvloop and other selectors are left as they are.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
from typing import Any

__all__ = ["cap_ready_events"]

log = logging.getLogger(__name__)


class _CappedEpoll:
    """A select.epoll whose poll() returns at most `cap` events."""

    __slots__ = ("epoll", "cap")

    def __init__(self, epoll: Any, cap: int) -> None:
        self.epoll = epoll
        self.cap = cap

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        cap = self.cap
        result: list[tuple[int, int]] = self.epoll.poll(
            timeout, cap if maxevents <= 0 or maxevents > cap else maxevents
        )
        return result

    def __getattr__(self, name: str) -> Any:  # register, modify, unregister, close, fileno
        return getattr(self.epoll, name)


def cap_ready_events(loop: asyncio.AbstractEventLoop, cap: int) -> bool:
    """Make `loop` take at most `cap` ready sockets per turn (0: no cap). True when capped:
    an asyncio selector loop over epoll; any other loop is left alone."""
    selector = getattr(loop, "_selector", None)
    if cap <= 0 or not isinstance(selector, selectors.EpollSelector):
        return False
    inner = selector._selector  # type: ignore[attr-defined]  # the select.epoll object
    if isinstance(inner, _CappedEpoll):
        inner.cap = cap
    else:
        selector._selector = _CappedEpoll(inner, cap)  # type: ignore[attr-defined]
    log.debug("event loop: at most %d ready sockets per turn", cap)
    return True
