"""Load-test limits, command-line value parsing and the loadtest error."""

from __future__ import annotations

import re

from mlserve import __version__
from mlserve.errors import MlserveError, UsageError

__all__ = [
    "ENDPOINTS",
    "ENGINES",
    "ERROR_SAMPLES",
    "LATE_AFTER_S",
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_PAYLOADS",
    "MAX_PROCESSES",
    "MAX_RATE",
    "MAX_REQUESTS",
    "MAX_WARMUP_S",
    "PROCESS_TIME_HEADER",
    "USER_AGENT",
    "LoadtestError",
    "parse_duration",
    "parse_header",
    "split_int",
]

# Hard caps: every loop is bounded in time and in count, whatever the flags say.
MAX_DURATION_S = 3600.0
MAX_WARMUP_S = 600.0
MAX_REQUESTS = 20_000_000
MAX_CONCURRENCY = 10_000
MAX_RATE = 1_000_000.0
MAX_PAYLOADS = 100_000
MAX_PROCESSES = 64
# An open-loop request sent more than this behind its scheduled start counts as late.
LATE_AFTER_S = 0.005
# Distinct error messages kept for the report.
ERROR_SAMPLES = 5
ENDPOINTS = ("predict", "batch", "v2", "custom")
ENGINES = ("raw", "aiohttp")
USER_AGENT = f"mlserve-loadtest/{__version__}"
PROCESS_TIME_HEADER = "x-process-time"


class LoadtestError(MlserveError):
    """The target could not be load-tested at all (unreachable, every request failed)."""

    code = "loadtest_failed"
    exit_code = 1


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, option: str = "--duration") -> float:
    """'500ms', '30s', '2m', '1h' or plain seconds ('10', '2.5') → seconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise UsageError(
            f"invalid {option} '{text}': use a number of seconds or 500ms, 30s, 2m, 1h"
        )
    unit = (match[2] or "s").lower()
    return float(match[1]) * _DURATION_UNITS[unit]


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' → (name, value); refuses what would break the request line."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        raise UsageError(f"invalid --header '{text}': use 'Name: value'")
    if "\r" in value or "\n" in value:
        raise UsageError(f"invalid --header '{name}': the value contains a line break")
    return name, value


def split_int(total: int, parts: int) -> list[int]:
    """Share `total` over `parts` as evenly as possible (the first ones get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
