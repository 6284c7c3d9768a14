"""One log line per spell of overload refusals, not one line per refusal.

Under overload a WARNING line per refused request (an unbuffered write to stderr) cost more
than the refusal itself: 17 % of the event loop with batches of 50 texts under 2,000
connections (docs/benchmarks.md, "Fourth pass"). Every 503 "overloaded" — answered by the
connection (mlserve.server.shedding) or by a route whose model refused the rows
(OverloadedError) — is noted here instead: the first after a quiet spell is logged at once
(logger mlserve.overload, WARNING), then one summary line per SUMMARY_EVERY_S with the count.
Each refusal still has its access-log line when it went through the app, and its metrics.
"""

from __future__ import annotations

import logging
import time

__all__ = ["SUMMARY_EVERY_S", "RefusalLog", "refusals"]

log = logging.getLogger("mlserve.overload")

SUMMARY_EVERY_S = 10.0


class RefusalLog:
    """Counts overload refusals and logs them in summary lines."""

    __slots__ = ("refused", "first_refused", "logged_at")

    def __init__(self) -> None:
        self.refused = 0  # since the last summary line
        self.first_refused = 0.0  # when the first of those was refused (monotonic)
        self.logged_at = float("-inf")  # the first refusal after a quiet spell is logged at once

    def note(self) -> None:
        """One more refusal; logs the summary when it is due."""
        now = time.monotonic()
        if not self.refused:
            self.first_refused = now
        self.refused += 1
        if now - self.logged_at >= SUMMARY_EVERY_S:
            log.warning(
                "overloaded: refused %d prediction request(s) (503) in the last %.1f s "
                "(batching.max_queue_delay_ms, batching.max_queue)",
                self.refused,
                now - self.first_refused,
            )
            self.refused = 0
            self.logged_at = now


# The process's: the connection's refusals and the routes' share one summary.
refusals = RefusalLog()
