"""What a run produced, for machines and CI: the JSON report, JUnit XML and exit checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlserve.errors import UsageError
from mlserve.loadtest.options import LoadtestError
from mlserve.loadtest.plan import LoadPlan, Target
from mlserve.loadtest.stats import RunResult, Summary, json_number

__all__ = ["ensure_ok", "failure_lines", "junit_xml", "report_dict", "write_text"]


def report_dict(
    summary: Summary, *, target: Target, plan: LoadPlan, processes: int = 1
) -> dict[str, Any]:
    """The machine report (vegeta-like names; every time in milliseconds)."""
    r = summary.result
    server = summary.server
    return {
        "requests": r.requests,
        "rate": json_number(summary.rate),
        "throughput": json_number(summary.throughput),
        "duration": round(r.duration_s * 1000.0, 3),
        "success": json_number(r.successes / r.requests) if r.requests else None,
        "error_rate": json_number(summary.error_rate),
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
            "mean": json_number(r.bytes_in / r.responses) if r.responses else None,
        },
        "bytes_out": {
            "total": r.bytes_out,
            "mean": json_number(r.bytes_out / r.requests) if r.requests else None,
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
                "actual": json_number(t.actual),
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


def failure_lines(summary: Summary) -> list[str]:
    """One line per failed threshold, for stderr."""
    return [f"threshold failed: {v.describe()}" for v in summary.failed]


def write_text(path: Path, data: bytes) -> None:
    """Write a report file; a path that cannot be written is a usage error."""
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


def ensure_some_success(result: RunResult, target: Target) -> None:
    """Not one request succeeded: whatever no gate caught, the run fails with the most common
    answer (a load test of nothing but errors measured nothing)."""
    if result.responses and not result.successes:
        status, count = max(result.status_codes.items(), key=lambda item: item[1])
        sample = next((s for s in result.error_samples if s.startswith(f"HTTP {status}:")), None)
        raise LoadtestError(
            f"no request to {target.url} succeeded: {count:,} of {result.requests:,} "
            f"answered {status}" + (f" ({sample})" if sample else "")
        )
