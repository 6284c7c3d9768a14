"""Pass/fail gates on a run: k6-style thresholds and the --max-*/--min-* flag shortcuts."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlserve.errors import UsageError

__all__ = ["Metric", "Threshold", "ThresholdResult", "flag_thresholds", "parse_threshold"]

Metric = Literal["p", "avg", "min", "max", "med", "rps", "error_rate"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_THRESHOLD_RE = re.compile(
    r"""^\s*(?:
        p\(\s*(?P<p>\d+(?:\.\d+)?)\s*\) | p(?P<pshort>\d+(?:\.\d+)?)
        | (?P<name>avg|mean|min|max|med|rps|error_rate|error-rate)
    )\s*(?P<op><=|>=|<|>)\s*
    (?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|%)?\s*$""",
    re.VERBOSE | re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Threshold:
    """One gate: `metric op value`; latencies in ms, rps in successful req/s, error_rate 0..1."""

    metric: Metric
    op: str
    value: float
    percentile: float | None = None
    name: str = ""

    @property
    def metric_label(self) -> str:
        return f"p({_fmt_num(self.percentile)})" if self.metric == "p" else self.metric

    @property
    def expression(self) -> str:
        return f"{self.metric_label}{self.op}{_fmt_num(self.value)}"

    @property
    def label(self) -> str:
        return self.name or self.expression

    def holds(self, actual: float) -> bool:
        # NaN (no data: e.g. no response at all) never satisfies a gate.
        return not math.isnan(actual) and _OPS[self.op](actual, self.value)


def _fmt_num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}" if value == value else "nan"


def parse_threshold(text: str) -> Threshold:
    """k6-style 'p(95)<200', 'avg<=50', 'rps>=100', 'error_rate<0.01' (or '<1%')."""
    match = _THRESHOLD_RE.match(text)
    if not match:
        raise UsageError(
            f"invalid --threshold '{text}': use METRIC OP VALUE, e.g. 'p(95)<200', 'avg<50', "
            "'rps>=100', 'error_rate<0.01' (metrics: p(N), avg, min, max, med, rps, error_rate)"
        )
    value = float(match["value"])
    unit = (match["unit"] or "").lower()
    raw_name = (match["name"] or "").lower()
    percentile: float | None = None
    metric: Metric
    if match["p"] is not None or match["pshort"] is not None:
        metric = "p"
        percentile = float(match["p"] if match["p"] is not None else match["pshort"])
        if not 0.0 <= percentile <= 100.0:
            raise UsageError(f"invalid --threshold '{text}': the percentile must be 0 to 100")
    elif raw_name in ("avg", "mean"):
        metric = "avg"
    elif raw_name in ("error_rate", "error-rate"):
        metric = "error_rate"
    else:
        metric = raw_name  # type: ignore[assignment]
    if unit == "%":
        if metric != "error_rate":
            raise UsageError(f"invalid --threshold '{text}': '%' only applies to error_rate")
        value /= 100.0
    elif unit == "ms" and metric in ("rps", "error_rate"):
        raise UsageError(f"invalid --threshold '{text}': 'ms' only applies to latencies")
    if not math.isfinite(value):
        raise UsageError(f"invalid --threshold '{text}': the value must be a finite number")
    return Threshold(
        metric=metric,
        op=match["op"],
        value=value,
        percentile=percentile,
        name=" ".join(text.split()),
    )


def flag_thresholds(
    *,
    max_p50_ms: float | None = None,
    max_p95_ms: float | None = None,
    max_p99_ms: float | None = None,
    min_rps: float | None = None,
    max_error_rate: float | None = None,
) -> list[Threshold]:
    """The --max-*/--min-* shortcuts as thresholds (named after their flag)."""
    out: list[Threshold] = []
    for flag, pct, bound in (
        ("--max-p50-ms", 50.0, max_p50_ms),
        ("--max-p95-ms", 95.0, max_p95_ms),
        ("--max-p99-ms", 99.0, max_p99_ms),
    ):
        if bound is not None:
            out.append(
                Threshold(
                    metric="p", op="<=", value=bound, percentile=pct, name=f"{flag} {bound:g}"
                )
            )
    if min_rps is not None:
        out.append(Threshold(metric="rps", op=">=", value=min_rps, name=f"--min-rps {min_rps:g}"))
    if max_error_rate is not None:
        if not 0.0 <= max_error_rate <= 1.0:
            raise UsageError(
                f"invalid --max-error-rate {max_error_rate:g}: use a fraction from 0 to 1"
            )
        out.append(
            Threshold(
                metric="error_rate",
                op="<=",
                value=max_error_rate,
                name=f"--max-error-rate {max_error_rate:g}",
            )
        )
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ThresholdResult:
    """One gate's verdict on a run, with the value it was judged on."""

    threshold: Threshold
    actual: float
    passed: bool

    def describe(self) -> str:
        t = self.threshold
        unit = " ms" if t.metric in ("p", "avg", "min", "max", "med") else ""
        if t.metric == "rps":
            unit = " req/s"
        actual = "n/a (no data)" if math.isnan(self.actual) else f"{self.actual:.4g}{unit}"
        return f"{t.label}: {t.metric_label} = {actual}"
