"""Load generator behind `mlserve loadtest`: plans, engine, statistics, gates and reports."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import multiprocessing
import queue as queue_mod
import random
import re
import signal
import ssl
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from mlserve import __version__
from mlserve.errors import MlserveError, UsageError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

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
ERROR_SAMPLES = 5
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("50th", 50.0),
    ("90th", 90.0),
    ("95th", 95.0),
    ("99th", 99.0),
    ("99.9th", 99.9),
)
ENDPOINTS = ("predict", "batch", "v2", "custom")
ENGINES = ("raw", "aiohttp")
USER_AGENT = f"mlserve-loadtest/{__version__}"
PROCESS_TIME_HEADER = "x-process-time"


class LoadtestError(MlserveError):
    """The target could not be load-tested at all (unreachable, every request failed)."""

    code = "loadtest_failed"
    exit_code = 1


# ------------------------------------------------------------------------------- parsing
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


# ------------------------------------------------------------------------------ thresholds
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


# ---------------------------------------------------------------------------- statistics
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
    import bisect

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
    count: int
    min: float
    mean: float
    max: float
    percentiles: dict[str, float]
    histogram: list[tuple[float, float, int]]

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"min": _num(self.min), "mean": _num(self.mean)}
        out.update({k: _num(v) for k, v in self.percentiles.items()})
        out["max"] = _num(self.max)
        return out


def _num(value: float) -> float | None:
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


# --------------------------------------------------------------------------------- target
@dataclass(frozen=True, kw_only=True)
class Target:
    """What to send: one method and URL, pre-encoded bodies sent round-robin."""

    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    bodies: tuple[bytes | None, ...]
    endpoint: str = "custom"

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


def check_url(url: str) -> str:
    """Only http(s) URLs with a host; returns the URL without a trailing slash."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"invalid --url '{url}': {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"invalid --url '{url}': only http:// and https:// URLs can be tested")
    if not parts.hostname:
        raise UsageError(f"invalid --url '{url}': no host")
    if parts.username or parts.password:
        raise UsageError(f"invalid --url '{url}': put credentials in --header or --api-key")
    return url.rstrip("/")


def sample_texts() -> list[str]:
    """The texts of the bundled sentiment corpus."""
    from importlib.resources import files

    data = (files("mlserve.samples") / "sentiment.csv").read_text(encoding="utf-8")
    return [row["text"] for row in csv.DictReader(io.StringIO(data)) if row.get("text")]


@dataclass(frozen=True, kw_only=True)
class Payloads:
    """Inputs for the requests: texts to wrap in a body, or whole bodies sent as they are."""

    texts: tuple[str, ...] = ()
    bodies: tuple[bytes, ...] = ()
    source: str = "built-in samples"


def load_payloads(path: Path | None, *, text_column: str = "text") -> Payloads:
    """Texts from .txt (a line each) or .csv (one column); request bodies from .jsonl."""
    if path is None:
        return Payloads(texts=tuple(sample_texts()[:MAX_PAYLOADS]))
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".jsonl"):
        raise UsageError(f"cannot read --data {path}: use a .txt, .csv or .jsonl file")
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--data file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"--data {path} is a directory") from None
    except UnicodeDecodeError:
        raise UsageError(f"--data file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read --data file {path}: {exc.strerror}") from None
    if suffix == ".txt":
        texts = [line.strip() for line in content.splitlines() if line.strip()]
        return _payloads_or_fail(path, texts=texts)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        if text_column not in (reader.fieldnames or []):
            raise UsageError(
                f"--data {path} has no column '{text_column}' "
                f"(columns: {', '.join(reader.fieldnames or []) or 'none'}); use --text-column"
            )
        texts = [row[text_column] for row in reader if row.get(text_column)]
        return _payloads_or_fail(path, texts=texts)
    bodies: list[bytes] = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--data {path} line {lineno} is not JSON: {exc.msg}") from None
        bodies.append(line.strip().encode())
        if len(bodies) >= MAX_PAYLOADS:
            break
    return _payloads_or_fail(path, bodies=bodies)


def _payloads_or_fail(
    path: Path, *, texts: Sequence[str] = (), bodies: Sequence[bytes] = ()
) -> Payloads:
    if not texts and not bodies:
        raise UsageError(f"--data file {path} holds no input")
    return Payloads(
        texts=tuple(texts[:MAX_PAYLOADS]), bodies=tuple(bodies[:MAX_PAYLOADS]), source=str(path)
    )


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _v2_path(model: str) -> str:
    name, version = model, None
    if ":" in model and "@" not in model:
        name, _, version = model.partition(":")
    path = f"/v2/models/{quote(name, safe='@')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + "/infer"


def build_target(
    *,
    url: str,
    endpoint: str = "predict",
    payloads: Payloads,
    model: str | None = None,
    batch_size: int = 1,
    path: str | None = None,
    method: str | None = None,
    body_template: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    api_key: str | None = None,
) -> Target:
    """Turn the command's flags into the exact requests to send (bodies encoded once)."""
    base = check_url(url)
    if endpoint not in ENDPOINTS:
        raise UsageError(f"invalid --endpoint '{endpoint}': use {', '.join(ENDPOINTS)}")
    if batch_size < 1 or batch_size > 10_000:
        raise UsageError(f"invalid --batch-size {batch_size}: use 1 to 10000")
    if batch_size > 1 and endpoint not in ("batch", "v2"):
        raise UsageError("--batch-size only applies to --endpoint batch or v2")
    if endpoint != "custom" and (method is not None or body_template is not None):
        raise UsageError("--method and --body only apply to --endpoint custom")
    if path is not None and not path.startswith("/"):
        raise UsageError(f"invalid --path '{path}': it must start with '/'")
    texts = list(payloads.texts)
    raw = list(payloads.bodies)

    bodies: list[bytes | None]
    verb = "POST"
    if endpoint == "custom":
        if path is None:
            raise UsageError("--endpoint custom needs --path (e.g. --path /predict)")
        verb = (method or ("POST" if body_template is not None or raw else "GET")).upper()
        if verb not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise UsageError(f"invalid --method '{method}': use GET, POST, PUT, PATCH or DELETE")
        if body_template is not None and raw:
            raise UsageError("--body and a .jsonl --data file both give the body; pick one")
        if raw:
            bodies = list(raw)
        elif body_template is not None:
            bodies = _render_template(body_template, texts)
        else:
            bodies = [None]
    elif raw:
        bodies = list(raw)
    else:
        if not texts:
            raise UsageError("no input texts to send")
        bodies = []
        if endpoint == "predict":
            for text in texts:
                obj: dict[str, Any] = {"text": text}
                if model:
                    obj["model"] = model
                bodies.append(_encode(obj))
        else:
            for chunk in _chunks(texts, batch_size):
                if endpoint == "batch":
                    obj = {"texts": chunk}
                    if model:
                        obj["model"] = model
                else:
                    obj = {
                        "inputs": [
                            {
                                "name": "text",
                                "shape": [len(chunk)],
                                "datatype": "BYTES",
                                "data": chunk,
                            }
                        ]
                    }
                bodies.append(_encode(obj))
    if endpoint == "predict":
        default_path = "/api/predict"
    elif endpoint == "batch":
        default_path = "/api/predict/batch"
    elif endpoint == "v2":
        if not model:
            raise UsageError("--endpoint v2 needs --model NAME (the path is /v2/models/NAME/infer)")
        default_path = _v2_path(model)
    else:
        default_path = path or "/"
    all_headers: list[tuple[str, str]] = [("User-Agent", USER_AGENT), ("Accept", "*/*")]
    if any(b is not None for b in bodies):
        all_headers.append(("Content-Type", "application/json"))
    if api_key:
        all_headers.append(("Authorization", f"Bearer {api_key}"))
    for name, _ in headers:
        # A header given on the command line replaces a default of the same name.
        all_headers = [(k, v) for k, v in all_headers if k.lower() != name.lower()]
    all_headers.extend(headers)
    for name, _ in all_headers:
        if name.lower() in ("content-length", "host", "transfer-encoding", "connection"):
            raise UsageError(f"--header '{name}' is set by the load generator itself")
    return Target(
        url=base + (path or default_path),
        method=verb,
        headers=tuple(all_headers),
        bodies=tuple(bodies[:MAX_PAYLOADS]),
        endpoint=endpoint,
    )


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    if len(texts) < size:  # repeat the corpus so every batch is full
        texts = (texts * (size // len(texts) + 1))[:size]
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)] or [texts[:size]]


def _render_template(template: str, texts: Sequence[str]) -> list[bytes | None]:
    if "{{text}}" not in template:
        candidates = [template]
    else:
        pool = texts or ["hello"]
        candidates = [template.replace("{{text}}", json.dumps(t)[1:-1]) for t in pool]
    try:
        json.loads(candidates[0])
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"invalid --body: not JSON once {{{{text}}}} is filled in ({exc.msg}); "
            """e.g. --body '{"q": "{{text}}"}'"""
        ) from None
    return [c.encode() for c in candidates]


# ----------------------------------------------------------------------------------- plan
@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """How to send: closed loop (concurrency) or open loop (rate), and for how long."""

    concurrency: int = 8
    rate: float | None = None
    max_in_flight: int = 0
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    timeout: float = 10.0
    engine: str = "raw"
    insecure: bool = False
    # Set for one process of several: when to start (perf_counter clock, shared by processes
    # on one host) and which open-loop slots to take (k of every `stride`).
    start_at: float | None = None
    slot_index: int = 0
    slot_stride: int = 1

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def connections(self) -> int:
        return self.max_in_flight if self.open_loop else self.concurrency

    def validate(self) -> LoadPlan:
        if self.rate is not None and not 0 < self.rate <= MAX_RATE:
            raise UsageError(f"invalid --rate {self.rate:g}: use more than 0, at most {MAX_RATE:g}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(
                f"invalid --concurrency {self.concurrency}: use 1 to {MAX_CONCURRENCY}"
            )
        if self.open_loop and not 1 <= self.max_in_flight <= MAX_CONCURRENCY:
            raise UsageError(
                f"invalid --max-in-flight {self.max_in_flight}: use 1 to {MAX_CONCURRENCY}"
            )
        if self.duration is not None and not 0 < self.duration <= MAX_DURATION_S:
            raise UsageError(
                f"invalid --duration {self.duration:g}s: use more than 0, at most "
                f"{MAX_DURATION_S:g}s"
            )
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise UsageError(f"invalid --requests {self.requests}: use 1 to {MAX_REQUESTS:,}")
        if not 0 <= self.warmup <= MAX_WARMUP_S:
            raise UsageError(f"invalid --warmup {self.warmup:g}s: use 0 to {MAX_WARMUP_S:g}s")
        if not 0 < self.timeout <= 600:
            raise UsageError(f"invalid --timeout {self.timeout:g}: use more than 0, at most 600")
        if self.engine not in ENGINES:
            raise UsageError(f"invalid --engine '{self.engine}': use {' or '.join(ENGINES)}")
        return self

    def describe(self) -> str:
        if self.open_loop:
            shape = f"open loop at {self.rate:g} req/s (at most {self.max_in_flight} in flight)"
        else:
            shape = f"closed loop, {self.concurrency} connection{'s' * (self.concurrency != 1)}"
        stop = []
        if self.requests is not None:
            stop.append(f"{self.requests:,} requests")
        if self.duration is not None:
            stop.append(f"{self.duration:g}s")
        warm = f", warmup {self.warmup:g}s" if self.warmup else ""
        return f"{shape}, {' or '.join(stop)}{warm}"

    def share(self, index: int, processes: int) -> LoadPlan:
        """This process's part of the load when `processes` share it."""
        requests = None
        if self.requests is not None:
            requests = split_int(self.requests, processes)[index]
        return replace(
            self,
            concurrency=max(1, split_int(self.concurrency, processes)[index]),
            max_in_flight=max(1, math.ceil(self.max_in_flight / processes)),
            requests=requests,
            slot_index=index,
            slot_stride=processes,
        )


# --------------------------------------------------------------------------------- engine
class Recorder:
    """Where one phase's outcomes go; the hot path only appends and bumps counters."""

    __slots__ = (
        "lat",
        "srv",
        "codes",
        "failures",
        "samples",
        "bytes_in",
        "bytes_out",
        "errors",
        "last_end",
    )

    def __init__(self) -> None:
        self.lat: array[float] = array("d")
        self.srv: array[float] = array("d")
        self.codes: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.samples: list[str] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0
        self.last_end = 0.0

    def response(
        self, started: float, status: int, ptime: bytes | str | None, nbytes: int, body: bytes
    ) -> None:
        now = time.perf_counter()
        self.lat.append((now - started) * 1000.0)
        self.last_end = now
        self.codes[status] = self.codes.get(status, 0) + 1
        self.bytes_in += nbytes
        if ptime is not None:
            try:
                self.srv.append(float(ptime))
            except ValueError:
                pass
        if not 200 <= status < 300:
            self.errors += 1
            if len(self.samples) < ERROR_SAMPLES:
                self._sample(f"HTTP {status}: {_snippet(body)}")

    def failure(self, exc: BaseException) -> None:
        self.last_end = time.perf_counter()
        kind = describe_failure(exc)
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            detail = str(exc).strip()
            self._sample(f"{kind}: {detail}" if detail and detail != kind else kind)

    def _sample(self, text: str) -> None:
        if text not in self.samples:
            self.samples.append(text)

    @property
    def done(self) -> int:
        return len(self.lat) + sum(self.failures.values())


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:2048].decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and "message" in err:
            text = f"{err.get('code', 'error')}: {err['message']}"
        elif isinstance(data, dict) and "detail" in data:
            text = str(data["detail"])
    except (json.JSONDecodeError, AttributeError):
        pass
    text = " ".join(text.split())
    return (text[:limit] + "…") if len(text) > limit else (text or "(empty body)")


class ServerDisconnectedError(ConnectionError):
    """The server closed the connection before answering."""


class InvalidResponseError(ConnectionError):
    """The server answered something that is not HTTP/1.1."""


def describe_failure(exc: BaseException) -> str:
    """A short, stable name for a transport failure (the key errors are counted under)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, InvalidResponseError):
        return "invalid HTTP response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    name = type(exc).__name__
    if name == "ClientConnectorError":  # aiohttp wraps the OSError
        inner = getattr(exc, "os_error", None)
        if isinstance(inner, BaseException):
            return describe_failure(inner)
        return "cannot connect"
    if name == "ServerDisconnectedError":
        return "server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return name


class HttpEngine(Protocol):
    """Sends payload i and records the outcome; transport failures are recorded, not raised."""

    async def fire(self, index: int, started: float, rec: Recorder) -> None: ...

    async def aclose(self) -> None: ...


def _ssl_context(insecure: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools parses, a future waits for each answer."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.keep_alive = True
        self.deadline = 0.0
        self.ptime: bytes | None = None
        self.nbytes = 0
        self.status = 0
        self.keep_body = False
        self.body = b""
        self.headers_done = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools.HttpParserError and friends
            self._fail(InvalidResponseError(f"cannot parse the response: {exc}"))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and self.parser.get_status_code() and exc is None:
                # A body delimited by the end of the connection.
                self.keep_alive = False
                self._complete()
            else:
                self.waiter.set_exception(
                    exc
                    if exc is not None
                    else ServerDisconnectedError("server closed the connection")
                )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"x-process-time":
            self.ptime = value

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_body = not 200 <= self.status < 300

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)
        if self.keep_body and len(self.body) < 2048:
            self.body += body

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def _fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
        self.waiter = waiter = loop.create_future()
        self.ptime = None
        self.nbytes = 0
        self.body = b""
        self.headers_done = False
        if self.transport is None:  # pragma: no cover - send() follows connection_made()
            raise ServerDisconnectedError("not connected")
        self.transport.write(data)
        return waiter


class RawClient:
    """Fast engine: HTTP/1.1 keep-alive on asyncio protocols, each request pre-encoded whole.

    About four times less CPU per request than aiohttp (bench/loadtest_accuracy.md), so the
    generator is not the bottleneck it measures.
    """

    def __init__(self, target: Target, *, timeout: float, insecure: bool = False) -> None:
        parts = urlsplit(target.url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.ssl: ssl.SSLContext | None = _ssl_context(insecure) if self.tls else None
        self.timeout = timeout
        default_port = (parts.scheme == "https" and self.port == 443) or (
            parts.scheme == "http" and self.port == 80
        )
        host_header = parts.hostname or ""
        if ":" in host_header:  # IPv6 literal
            host_header = f"[{host_header}]"
        if not default_port:
            host_header += f":{self.port}"
        target_path = parts.path or "/"
        if parts.query:
            target_path += "?" + parts.query
        head = f"{target.method} {target_path} HTTP/1.1\r\nHost: {host_header}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in target.headers)
        self.requests: list[bytes] = []
        for body in target.bodies:
            if body is None:
                self.requests.append((head + "\r\n").encode("latin-1", "replace"))
            else:
                extra = f"Content-Length: {len(body)}\r\n\r\n"
                self.requests.append((head + extra).encode("latin-1", "replace") + body)
        self.body_sizes = [len(b or b"") for b in target.bodies]
        self.idle: list[_RawConnection] = []
        self.active: set[_RawConnection] = set()
        self.loop = asyncio.get_running_loop()
        self._watchdog = self.loop.create_task(self._watch())

    async def _connect(self) -> _RawConnection:
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                _RawConnection,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            ),
            self.timeout,
        )
        return conn

    async def fire(self, index: int, started: float, rec: Recorder) -> None:
        idle = self.idle
        try:
            conn = None
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    break
                conn = None
            if conn is None:
                conn = await self._connect()
            conn.deadline = time.perf_counter() + self.timeout
            self.active.add(conn)
            try:
                status = await conn.send(self.requests[index], self.loop)
            finally:
                self.active.discard(conn)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            rec.failure(exc)
            return
        rec.bytes_out += self.body_sizes[index]
        rec.response(started, status, conn.ptime, conn.nbytes, conn.body)
        if conn.keep_alive and not conn.closed:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _watch(self) -> None:
        tick = min(0.1, self.timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            for conn in [c for c in self.active if c.deadline < now]:
                conn._fail(TimeoutError(f"no response within {self.timeout:g}s"))

    async def aclose(self) -> None:
        self._watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog
        for conn in [*self.idle, *self.active]:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


class AiohttpClient:
    """Reference engine on aiohttp's pooled ClientSession (slower, fully featured)."""

    def __init__(
        self, target: Target, *, timeout: float, connections: int, insecure: bool = False
    ) -> None:
        import aiohttp
        from yarl import URL

        self._errors: tuple[type[BaseException], ...] = (
            aiohttp.ClientError,
            OSError,
            asyncio.TimeoutError,
        )
        connector = aiohttp.TCPConnector(
            limit=connections,
            limit_per_host=connections,
            ssl=_ssl_context(insecure) if target.scheme == "https" else False,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(target.headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        self.url = URL(target.url, encoded=False)
        self.method = target.method
        self.bodies = list(target.bodies)
        self.body_sizes = [len(b or b"") for b in target.bodies]

    async def fire(self, index: int, started: float, rec: Recorder) -> None:
        try:
            resp = await self.session.request(self.method, self.url, data=self.bodies[index])
            try:
                body = await resp.read()
            finally:
                resp.release()
        except self._errors as exc:
            rec.failure(exc)
            return
        rec.bytes_out += self.body_sizes[index]
        status = resp.status
        rec.response(
            started,
            status,
            resp.headers.get("X-Process-Time"),
            len(body),
            body if not 200 <= status < 300 else b"",
        )

    async def aclose(self) -> None:
        await self.session.close()


def make_client(target: Target, plan: LoadPlan) -> HttpEngine:
    if plan.engine == "aiohttp":
        return AiohttpClient(
            target, timeout=plan.timeout, connections=plan.connections, insecure=plan.insecure
        )
    return RawClient(target, timeout=plan.timeout, insecure=plan.insecure)


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """A live snapshot: counts so far and the latencies recorded since the previous one."""

    elapsed: float
    phase: Literal["warmup", "measure", "drain"]
    done: int
    errors: int
    window: array[float]


ProgressFn = Callable[[Progress], None]


class Engine:
    """Drives one process's share of the load; every loop stops on time and on count."""

    def __init__(
        self,
        target: Target,
        plan: LoadPlan,
        *,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress_every: float = 0.25,
    ) -> None:
        self.target = target
        self.plan = plan
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.progress_every = progress_every
        self.rec = Recorder()
        self.warm = Recorder()
        self.stopping = False
        self.claimed = 0
        self.limit = plan.requests if plan.requests is not None else MAX_REQUESTS
        self.start = 0.0
        self.measure_start = 0.0
        self.end = 0.0
        self.late = 0
        self.dropped = 0
        self.max_lag = 0.0
        self.in_flight = 0
        self._slot_freed: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported = 0

    def stop(self) -> None:
        self.stopping = True
        if self._slot_freed is not None and not self._slot_freed.done():
            self._slot_freed.set_result(None)

    async def run(self) -> RunResult:
        plan = self.plan
        client = make_client(self.target, plan)
        try:
            if plan.start_at is not None:
                await asyncio.sleep(max(0.0, plan.start_at - time.perf_counter()))
            self.start = time.perf_counter()
            self.measure_start = self.start + plan.warmup
            # --requests alone still stops at the hard cap on time.
            run_for = plan.duration if plan.duration is not None else MAX_DURATION_S
            self.end = self.measure_start + min(run_for, MAX_DURATION_S)
            ticker = asyncio.get_running_loop().create_task(self._tick())
            try:
                if plan.open_loop:
                    await self._open_loop(client)
                else:
                    n_bodies = len(self.target.bodies)
                    stride = plan.slot_stride
                    await asyncio.gather(
                        *(
                            self._closed_worker(client, (plan.slot_index + i * stride) % n_bodies)
                            for i in range(plan.concurrency)
                        )
                    )
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            self._report_progress("drain")
        finally:
            await client.aclose()
        return self._result()

    def _result(self) -> RunResult:
        rec = self.rec
        # A share that sent nothing has an empty window (it must not widen a merged one).
        ended = rec.last_end if rec.last_end > 0 else self.measure_start
        return RunResult(
            latencies_ms=rec.lat,
            server_ms=rec.srv,
            status_codes=dict(rec.codes),
            transport_errors=dict(rec.failures),
            error_samples=list(rec.samples),
            started=self.measure_start,
            ended=max(ended, self.measure_start),
            bytes_in=rec.bytes_in,
            bytes_out=rec.bytes_out,
            late=self.late,
            dropped=self.dropped,
            max_lag_ms=self.max_lag * 1000.0,
            interrupted=self.stopping,
        )

    async def _closed_worker(self, client: HttpEngine, index: int) -> None:
        pc = time.perf_counter
        fire = client.fire
        n = len(self.target.bodies)
        step = self.plan.slot_stride * self.plan.concurrency
        rec, warm = self.rec, self.warm
        measure_start, end = self.measure_start, self.end
        while not self.stopping:
            now = pc()
            if now >= end:
                return
            if now >= measure_start:
                if self.claimed >= self.limit:
                    return
                self.claimed += 1
                await fire(index, now, rec)
            else:
                await fire(index, now, warm)
            index = (index + step) % n

    async def _open_loop(self, client: HttpEngine) -> None:
        plan = self.plan
        rate = plan.rate or 1.0
        loop = asyncio.get_running_loop()
        pc = time.perf_counter
        interval = plan.slot_stride / rate
        # This process takes slot k of every `stride` slots of the global schedule.
        first = self.start + plan.slot_index / rate
        warm_slots = math.ceil(max(0.0, self.measure_start - first) / interval)
        n_bodies = len(self.target.bodies)
        cap = plan.max_in_flight
        i = 0
        while not self.stopping:
            scheduled = first + i * interval
            measured = i >= warm_slots
            if scheduled >= self.end or (measured and self.claimed >= self.limit):
                break
            now = pc()
            if now >= self.end:
                # The window is over: slots still waiting for a free one are never sent (and
                # counted as dropped below), so an overloaded target cannot stretch the run.
                break
            if scheduled > now:
                wait = scheduled - now
                # Timers are coarse (about 1 ms): sleep most of the way, then yield until due.
                await asyncio.sleep(wait - 0.001 if wait > 0.002 else 0)
                continue
            if self.in_flight >= cap:
                self._slot_freed = loop.create_future()
                await self._slot_freed
                self._slot_freed = None
                continue
            lag = now - scheduled
            if measured:
                self.claimed += 1
                if lag > LATE_AFTER_S:
                    self.late += 1
                self.max_lag = max(self.max_lag, lag)
            self.in_flight += 1
            task = loop.create_task(
                self._open_one(
                    client,
                    (plan.slot_index + i * plan.slot_stride) % n_bodies,
                    scheduled,
                    self.rec if measured else self.warm,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1
        if not self.stopping:
            # Measured slots of the schedule that were never sent (stuck at the cap).
            if plan.requests is not None:
                planned = plan.requests
            else:
                planned = math.ceil(max(0.0, self.end - first) / interval) - warm_slots
            self.dropped = max(0, planned - self.claimed)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _open_one(
        self, client: HttpEngine, index: int, scheduled: float, rec: Recorder
    ) -> None:
        try:
            # Latency counts from the scheduled start: waiting for a slot is part of it.
            await client.fire(index, scheduled, rec)
        finally:
            self.in_flight -= 1
            freed = self._slot_freed
            if freed is not None and not freed.done():
                freed.set_result(None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            if self.should_stop is not None and not self.stopping and self.should_stop():
                self.stop()
            now = time.perf_counter()
            self._report_progress("warmup" if now < self.measure_start else "measure")

    def _report_progress(self, phase: Literal["warmup", "measure", "drain"]) -> None:
        if self.on_progress is None:
            return
        lat = self.rec.lat
        window = lat[self._reported :]
        self._reported = len(lat)
        self.on_progress(
            Progress(
                elapsed=time.perf_counter() - self.start,
                phase=phase,
                done=self.rec.done,
                errors=self.rec.errors,
                window=window,
            )
        )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_engine(
    target: Target,
    plan: LoadPlan,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Run one engine in this process; Ctrl-C stops sending and keeps what was measured."""
    engine = Engine(target, plan, on_progress=on_progress, should_stop=should_stop)

    async def main() -> RunResult:
        loop = asyncio.get_running_loop()
        installed = False
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGINT, engine.stop)
                installed = True
        try:
            return await engine.run()
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        return runner.run(main())


async def _preflight(target: Target, plan: LoadPlan) -> tuple[str | None, int | None]:
    client = make_client(target, replace(plan, concurrency=1, max_in_flight=1))
    rec = Recorder()
    try:
        await client.fire(0, time.perf_counter(), rec)
    finally:
        await client.aclose()
    if rec.failures:
        return next(iter(rec.failures)), None
    return None, next(iter(rec.codes))


def preflight(target: Target, plan: LoadPlan) -> int:
    """Send one request first: an unreachable target is an error, not a report of errors."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        failure, status = runner.run(_preflight(target, plan))
    if failure is not None:
        hint = " (is the server running?)" if failure == "connection refused" else ""
        raise LoadtestError(f"cannot reach {target.url}: {failure}{hint}")
    return status or 0


# ------------------------------------------------------------------------ several processes
def _child_main(
    index: int,
    target: Target,
    plan: LoadPlan,
    events: Any,
    go: Any,
    start_at: Any,
    stop: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    try:
        events.put(("ready", index, None))
        if not go.wait(120):
            return
        share = replace(plan, start_at=start_at.value)
        result = run_engine(
            target,
            share,
            on_progress=lambda p: events.put(("progress", index, p)),
            should_stop=stop.is_set,
        )
        events.put(("result", index, result))
    except BaseException as exc:  # report it to the parent, whatever it is
        events.put(("error", index, f"{type(exc).__name__}: {exc}"))


def run_processes(
    target: Target,
    plan: LoadPlan,
    processes: int,
    *,
    on_progress: Callable[[int, Progress], None] | None = None,
) -> RunResult:
    """Spread the load over `processes` spawned processes and merge their raw results."""
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    go = ctx.Event()
    stop = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_child_main,
            args=(i, target, plan.share(i, processes), events, go, start_at, stop),
            name=f"mlserve-loadtest-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results: dict[int, RunResult] = {}
    ready = 0
    setup_deadline = time.monotonic() + 120
    hard_deadline = (
        time.monotonic()
        + 120
        + plan.warmup
        + (plan.duration if plan.duration is not None else MAX_DURATION_S)
        + plan.timeout * 2
        + 30
    )
    try:
        while len(results) < processes:
            try:
                kind, index, payload = events.get(timeout=0.25)
            except queue_mod.Empty:
                if not go.is_set() and time.monotonic() > setup_deadline:
                    raise LoadtestError("load processes did not start within 120 s") from None
                if time.monotonic() > hard_deadline:
                    raise LoadtestError("load processes did not finish in time") from None
                dead = [p for i, p in enumerate(procs) if i not in results and not p.is_alive()]
                if dead and events.empty():
                    raise LoadtestError(
                        f"load process {dead[0].name} exited with code {dead[0].exitcode}"
                    ) from None
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if kind == "ready":
                ready += 1
                if ready == processes:
                    start_at.value = time.perf_counter() + 0.1
                    go.set()
            elif kind == "progress" and on_progress is not None:
                on_progress(index, payload)
            elif kind == "result":
                results[index] = payload
            elif kind == "error":
                raise LoadtestError(f"load process {index} failed: {payload}")
    finally:
        stop.set()
        go.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        events.close()
    return merge_results(results[i] for i in range(processes))


def run_load(
    target: Target,
    plan: LoadPlan,
    *,
    processes: int = 1,
    on_progress: Callable[[int, Progress], None] | None = None,
) -> RunResult:
    """Run the plan in this process, or spread over several with results merged exactly."""
    if processes == 1:
        callback = None if on_progress is None else (lambda p: on_progress(0, p))
        return run_engine(target, plan, on_progress=callback)
    return run_processes(target, plan, processes, on_progress=on_progress)


# -------------------------------------------------------------------------------- reports
def report_dict(
    summary: Summary, *, target: Target, plan: LoadPlan, processes: int = 1
) -> dict[str, Any]:
    """The machine report (vegeta-like names; every time in milliseconds)."""
    r = summary.result
    server = summary.server
    return {
        "requests": r.requests,
        "rate": _num(summary.rate),
        "throughput": _num(summary.throughput),
        "duration": round(r.duration_s * 1000.0, 3),
        "success": _num(r.successes / r.requests) if r.requests else None,
        "error_rate": _num(summary.error_rate),
        "status_codes": {str(code): n for code, n in sorted(r.status_codes.items())},
        "transport_errors": dict(sorted(r.transport_errors.items())),
        "errors": list(r.error_samples),
        "latencies": summary.latency.as_dict(),
        "server_process_time": {"count": server.count, **server.as_dict()},
        "histogram": [
            {"from": round(lo, 4), "to": round(hi, 4), "count": n}
            for lo, hi, n in summary.latency.histogram
        ],
        "bytes_in": {
            "total": r.bytes_in,
            "mean": _num(r.bytes_in / r.responses) if r.responses else None,
        },
        "bytes_out": {
            "total": r.bytes_out,
            "mean": _num(r.bytes_out / r.requests) if r.requests else None,
        },
        "schedule": (
            {
                "target_rate": plan.rate,
                "late": r.late,
                "dropped": r.dropped,
                "max_lag": round(r.max_lag_ms, 3),
            }
            if plan.open_loop
            else None
        ),
        "thresholds": [
            {
                "name": t.threshold.label,
                "expression": t.threshold.expression,
                "actual": _num(t.actual),
                "passed": t.passed,
            }
            for t in summary.thresholds
        ],
        "passed": summary.passed,
        "interrupted": r.interrupted,
        "time_unit": "ms",
        "config": {
            "url": target.url,
            "method": target.method,
            "endpoint": target.endpoint,
            "mode": "open" if plan.open_loop else "closed",
            "concurrency": None if plan.open_loop else plan.concurrency,
            "rate": plan.rate,
            "max_in_flight": plan.max_in_flight if plan.open_loop else None,
            "duration_limit_s": plan.duration,
            "requests_limit": plan.requests,
            "warmup_s": plan.warmup,
            "timeout_s": plan.timeout,
            "processes": processes,
            "engine": plan.engine,
            "payloads": len(target.bodies),
        },
    }


def junit_xml(summary: Summary, *, target: Target, suite: str = "mlserve loadtest") -> bytes:
    """JUnit XML: one test case per threshold, failed ones with a <failure message>."""
    from xml.etree import ElementTree as ET  # noqa: S405 - builds XML, parses none

    failures = len(summary.failed)
    duration = f"{summary.result.duration_s:.3f}"
    root = ET.Element("testsuites", name=suite, tests=str(len(summary.thresholds)))
    root.set("failures", str(failures))
    root.set("time", duration)
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(summary.thresholds)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=duration,
    )
    props = ET.SubElement(node, "properties")
    for key, value in (
        ("url", target.url),
        ("requests", str(summary.result.requests)),
        ("throughput", f"{summary.throughput:.3f}"),
        ("error_rate", f"{summary.error_rate:.6f}"),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    for verdict in summary.thresholds:
        case = ET.SubElement(
            node,
            "testcase",
            classname="mlserve.loadtest.thresholds",
            name=verdict.threshold.label,
            time=duration,
        )
        if not verdict.passed:
            failure = ET.SubElement(
                case, "failure", message=verdict.describe(), type="ThresholdFailed"
            )
            failure.text = f"{verdict.threshold.expression} does not hold: {verdict.describe()}"
        else:
            out = ET.SubElement(case, "system-out")
            out.text = verdict.describe()
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _ms(value: float) -> str:
    if math.isnan(value):
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _bar(fraction: float, width: int) -> str:
    blocks = " ▏▎▍▌▋▊▉█"
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    part = int((cells - full) * 8)
    return "█" * full + (blocks[part] if part and full < width else "")


def render_report(
    summary: Summary, *, target: Target, plan: LoadPlan, processes: int, console: Console
) -> None:
    """The human report: rates, latency table (client and server side), codes, histogram."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    r = summary.result
    lat, srv = summary.latency, summary.server
    procs = f", {processes} processes" if processes > 1 else ""
    console.print(
        f"[bold]{escape(target.method)} {escape(target.url)}[/]  "
        f"[dim]{escape(plan.describe())}{procs}, engine {plan.engine}[/]"
    )
    if r.interrupted:
        console.print("[yellow]interrupted: the figures cover what was measured until then[/]")
    ok_ratio = (r.successes / r.requests * 100) if r.requests else 0.0
    console.print(
        f"[bold]{r.requests:,}[/] requests in {r.duration_s:.2f}s  "
        f"[bold]{summary.throughput:,.1f}[/] successful req/s  "
        f"(rate {summary.rate:,.1f} req/s, success {ok_ratio:.2f}%)"
    )
    if plan.open_loop:
        style = "yellow" if r.late or r.dropped else "dim"
        console.print(
            f"[{style}]schedule: target {plan.rate:g} req/s, {r.late:,} sent more than "
            f"{LATE_AFTER_S * 1000:g} ms late, {r.dropped:,} never sent, "
            f"max lag {r.max_lag_ms:.1f} ms[/]"
        )
    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    table.add_column("latency (ms)")
    for name in ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    table.add_column("n", justify="right")

    def row(label: str, s: LatencyStats) -> list[str]:
        p = s.percentiles
        return [
            label,
            _ms(s.min),
            _ms(s.mean),
            *(_ms(p[k]) for k, _ in PERCENTILES[:2]),
            _ms(p["95th"]),
            _ms(p["99th"]),
            _ms(p["99.9th"]),
            _ms(s.max),
            f"{s.count:,}",
        ]

    table.add_row(*row("client", lat))
    if srv.count:
        table.add_row(*row("server", srv))
    else:
        table.add_row("server", *(["–"] * 8), "0", style="dim")
    console.print(table)
    console.print(
        "[dim]client: request sent to response read; server: its X-Process-Time header[/]"
    )
    codes = "  ".join(f"{code}×{n:,}" for code, n in sorted(r.status_codes.items()))
    failures = "  ".join(f"{kind}×{n:,}" for kind, n in sorted(r.transport_errors.items()))
    console.print(f"status codes: {escape(codes) or 'none'}")
    if failures:
        console.print(f"[red]transport errors: {escape(failures)}[/]")
    for sample in r.error_samples:
        console.print(f"  [red]•[/] {escape(sample)}")
    if lat.histogram:
        hist = Table(box=None, pad_edge=False, show_header=False)
        hist.add_column(justify="right", style="dim")
        hist.add_column()
        hist.add_column(justify="right")
        hist.add_column(justify="right", style="dim")
        peak = max(n for _, _, n in lat.histogram) or 1
        total = lat.count
        for lo, hi, n in lat.histogram:
            hist.add_row(
                f"{_ms(lo)} – {_ms(hi)} ms",
                Text(_bar(n / peak, 40), style="cyan"),
                f"{n:,}",
                f"{n / total * 100:5.1f}%",
            )
        console.print(hist)
    for verdict in summary.thresholds:
        mark = "[green]✓[/]" if verdict.passed else "[bold red]✗[/]"
        console.print(f"{mark} {escape(verdict.describe())}")


# ------------------------------------------------------------------------------ live view
class LiveView:
    """Aggregates progress snapshots (from one or several processes) for a rich Live display."""

    def __init__(self, *, processes: int = 1, window_s: float = 1.0) -> None:
        self.started = time.monotonic()
        self.done = [0] * processes
        self.errors = [0] * processes
        self.phase = ["warmup"] * processes
        self.window_s = window_s
        self.recent: deque[tuple[float, array[float]]] = deque()
        self.counts: deque[tuple[float, int]] = deque()
        # Every latency so far, or a uniform reservoir sample of them past RESERVOIR.
        self.sample: list[float] = []
        self.seen = 0
        self._rng = random.Random(0)  # noqa: S311 - sampling for a display, not security

    RESERVOIR = 50_000

    def _keep(self, latencies: Iterable[float]) -> None:
        for value in latencies:
            self.seen += 1
            if len(self.sample) < self.RESERVOIR:
                self.sample.append(value)
            else:
                slot = self._rng.randrange(self.seen)
                if slot < self.RESERVOIR:
                    self.sample[slot] = value

    def update(self, index: int, progress: Progress) -> None:
        now = time.monotonic()
        self.done[index] = progress.done
        self.errors[index] = progress.errors
        self.phase[index] = progress.phase
        if progress.window:
            self.recent.append((now, progress.window))
            self._keep(progress.window)
        self.counts.append((now, sum(self.done)))
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()
        while len(self.counts) > 2 and self.counts[1][0] < now - self.window_s:
            self.counts.popleft()

    def render(self) -> RenderableType:
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        done, errors = sum(self.done), sum(self.errors)
        if "warmup" in self.phase and done == 0:
            return Text(f"warming up… {elapsed:5.1f}s", style="dim")
        rps = math.nan
        if len(self.counts) >= 2:
            (t0, n0), (t1, n1) = self.counts[0], self.counts[-1]
            if t1 - t0 >= 0.2:  # snapshots of several processes arrive close together
                rps = (n1 - n0) / (t1 - t0)
        window: list[float] = []
        for _, chunk in self.recent:
            window.extend(chunk)
        if len(window) > 20_000:  # keep the display cheap: a uniform subsample is plenty
            window = window[:: len(window) // 10_000]
        window.sort()
        so_far = sorted(self.sample)
        p50, p99 = percentile(so_far, 50), percentile(so_far, 99)
        recent_p99 = percentile(window, 99)
        style = "red" if errors else "green"
        return Text.assemble(
            (f"{elapsed:6.1f}s ", "dim"),
            (f"{done:>10,} requests ", "bold"),
            (f"{'–' if math.isnan(rps) else f'{rps:,.0f}':>9} req/s ", ""),
            (f"p50 {_ms(p50):>7} ms  p99 {_ms(p99):>7} ms so far  ", ""),
            (f"(last {self.window_s:g} s: p99 {_ms(recent_p99)} ms)  ", "dim"),
            (f"errors {errors:,}", style),
        )


def failure_lines(summary: Summary) -> list[str]:
    return [f"threshold failed: {v.describe()}" for v in summary.failed]


def write_text(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def ensure_ok(result: RunResult, target: Target) -> None:
    """Every request failed before any answer: the target was not tested at all."""
    if result.requests and not result.responses:
        kinds = ", ".join(f"{k} ×{n:,}" for k, n in result.transport_errors.items())
        raise LoadtestError(f"every request to {target.url} failed: {kinds}")
    if not result.requests and not result.interrupted:
        raise LoadtestError("no request was measured (is the duration shorter than a request?)")
