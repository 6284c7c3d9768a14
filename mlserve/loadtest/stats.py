"""Exact run statistics: raw results, merging, nearest-rank percentiles and the run summary."""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from mlserve.loadtest.gates import Threshold, ThresholdResult
from mlserve.loadtest.options import ERROR_SAMPLES

__all__ = [
    "PERCENTILES",
    "LatencyStats",
    "RunResult",
    "Summary",
    "histogram",
    "json_number",
    "latency_stats",
    "merge_results",
    "metric_value",
    "percentile",
    "summarize",
]

# The percentiles every report shows, keyed as in the JSON report.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("50th", 50.0),
    ("90th", 90.0),
    ("95th", 95.0),
    ("99th", 99.0),
    ("99.9th", 99.9),
)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Exact nearest-rank percentile: the smallest sample with at least p% of samples ≤ it.

    p(0) is the minimum, p(100) the maximum; an empty sample gives NaN.
    """
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is outside 0..100")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = math.ceil(Fraction(str(p)) * n / 100)  # exact decimal maths: p(99.9) of 1000 is #999
    return sorted_values[min(max(rank, 1), n) - 1]


def histogram(sorted_values: Sequence[float], buckets: int = 12) -> list[tuple[float, float, int]]:
    """(low, high, count) rows over the sample; log-spaced when the spread is wide."""
    n = len(sorted_values)
    if n == 0:
        return []
    lo, hi = sorted_values[0], sorted_values[-1]
    if hi <= lo:
        return [(lo, hi, n)]
    if lo > 0 and hi / lo > 20:
        ratio = (hi / lo) ** (1.0 / buckets)
        edges = [lo * ratio**i for i in range(buckets + 1)]
    else:
        step = (hi - lo) / buckets
        edges = [lo + step * i for i in range(buckets + 1)]
    edges[-1] = hi
    rows: list[tuple[float, float, int]] = []
    start = 0
    for i in range(buckets):
        end = n if i == buckets - 1 else bisect.bisect_right(sorted_values, edges[i + 1], start)
        rows.append((edges[i], edges[i + 1], end - start))
        start = end
    return rows


@dataclass(kw_only=True)
class RunResult:
    """Raw outcome of one run (or of several merged): every latency kept, in ms."""

    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    server_ms: array[float] = field(default_factory=lambda: array("d"))
    status_codes: dict[int, int] = field(default_factory=dict)
    transport_errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    late: int = 0
    dropped: int = 0
    max_lag_ms: float = 0.0
    interrupted: bool = False

    @property
    def responses(self) -> int:
        return sum(self.status_codes.values())

    @property
    def requests(self) -> int:
        return self.responses + sum(self.transport_errors.values())

    @property
    def successes(self) -> int:
        return sum(n for code, n in self.status_codes.items() if 200 <= code < 300)

    @property
    def errors(self) -> int:
        return self.requests - self.successes

    @property
    def duration_s(self) -> float:
        return max(self.ended - self.started, 0.0)


def merge_results(results: Iterable[RunResult]) -> RunResult:
    """Combine runs exactly: latency arrays concatenated, counters summed, window widened."""
    parts = list(results)
    if not parts:
        return RunResult()
    out = RunResult(started=min(r.started for r in parts), ended=max(r.ended for r in parts))
    for r in parts:
        out.latencies_ms.extend(r.latencies_ms)
        out.server_ms.extend(r.server_ms)
        for code, n in r.status_codes.items():
            out.status_codes[code] = out.status_codes.get(code, 0) + n
        for kind, n in r.transport_errors.items():
            out.transport_errors[kind] = out.transport_errors.get(kind, 0) + n
        for sample in r.error_samples:
            if sample not in out.error_samples and len(out.error_samples) < ERROR_SAMPLES:
                out.error_samples.append(sample)
        out.bytes_in += r.bytes_in
        out.bytes_out += r.bytes_out
        out.late += r.late
        out.dropped += r.dropped
        out.max_lag_ms = max(out.max_lag_ms, r.max_lag_ms)
        out.interrupted = out.interrupted or r.interrupted
    return out


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    """Client- or server-side latency figures of one run, in ms."""

    count: int
    min: float
    mean: float
    max: float
    percentiles: dict[str, float]
    histogram: list[tuple[float, float, int]]

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "min": json_number(self.min),
            "mean": json_number(self.mean),
        }
        out.update({k: json_number(v) for k, v in self.percentiles.items()})
        out["max"] = json_number(self.max)
        return out


def json_number(value: float) -> float | None:
    """A figure for the JSON report: rounded to 4 decimals, NaN (no data) as null."""
    return None if math.isnan(value) else round(value, 4)


def latency_stats(values: Iterable[float], *, buckets: int = 12) -> LatencyStats:
    """Exact statistics of a sample (sorted once)."""
    return _stats(sorted(values), buckets=buckets)


def _stats(ordered: Sequence[float], *, buckets: int = 12) -> LatencyStats:
    n = len(ordered)
    return LatencyStats(
        count=n,
        min=ordered[0] if n else math.nan,
        mean=math.fsum(ordered) / n if n else math.nan,
        max=ordered[-1] if n else math.nan,
        percentiles={key: percentile(ordered, p) for key, p in PERCENTILES},
        histogram=histogram(ordered, buckets),
    )


@dataclass(frozen=True, kw_only=True)
class Summary:
    """What a run means: rates, latency statistics, threshold verdicts."""

    result: RunResult
    latency: LatencyStats
    server: LatencyStats
    thresholds: list[ThresholdResult]
    sorted_latencies: list[float]

    @property
    def rate(self) -> float:
        d = self.result.duration_s
        return self.result.requests / d if d > 0 else math.nan

    @property
    def throughput(self) -> float:
        d = self.result.duration_s
        return self.result.successes / d if d > 0 else math.nan

    @property
    def error_rate(self) -> float:
        n = self.result.requests
        return self.result.errors / n if n else math.nan

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.thresholds)

    @property
    def failed(self) -> list[ThresholdResult]:
        return [t for t in self.thresholds if not t.passed]


def metric_value(summary: Summary, threshold: Threshold) -> float:
    """The figure of the run that a threshold judges."""
    lat = summary.latency
    match threshold.metric:
        case "p":
            return percentile(summary.sorted_latencies, threshold.percentile or 0.0)
        case "avg":
            return lat.mean
        case "min":
            return lat.min
        case "max":
            return lat.max
        case "med":
            return percentile(summary.sorted_latencies, 50.0)
        case "rps":
            return summary.throughput
        case "error_rate":
            return summary.error_rate
    raise ValueError(threshold.metric)  # pragma: no cover


def summarize(result: RunResult, thresholds: Sequence[Threshold] = ()) -> Summary:
    """Statistics of a run and the verdict of every threshold on it."""
    ordered = sorted(result.latencies_ms)
    summary = Summary(
        result=result,
        latency=_stats(ordered),
        server=latency_stats(result.server_ms),
        thresholds=[],
        sorted_latencies=ordered,
    )
    verdicts = []
    for t in thresholds:
        actual = metric_value(summary, t)
        verdicts.append(ThresholdResult(threshold=t, actual=actual, passed=t.holds(actual)))
    summary.thresholds.extend(verdicts)
    return summary
