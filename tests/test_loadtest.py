"""Load generator maths and reports: percentiles, durations, thresholds, merging, JSON, JUnit."""

from __future__ import annotations

import json
import math
from array import array
from fractions import Fraction
from pathlib import Path
from xml.etree import ElementTree as ET  # noqa: S405 - parses only XML this test just wrote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.errors import UsageError
from mlserve.loadtest import (
    LoadPlan,
    LoadtestError,
    Payloads,
    RunResult,
    Threshold,
    build_target,
    describe_failure,
    ensure_ok,
    ensure_some_success,
    flag_thresholds,
    histogram,
    junit_xml,
    load_payloads,
    merge_results,
    parse_duration,
    parse_header,
    parse_threshold,
    percentile,
    report_dict,
    sample_texts,
    split_int,
    summarize,
)


def reference_percentile(values: list[float], p: float) -> float:
    """Nearest rank, by definition: the smallest x with at least p% of the samples <= x."""
    ordered = sorted(values)
    if p == 0:
        return ordered[0]
    for x in ordered:
        if Fraction(sum(1 for v in ordered if v <= x)) >= Fraction(str(p)) * len(ordered) / 100:
            return x
    raise AssertionError("unreachable")


def result_of(
    latencies: list[float],
    *,
    codes: dict[int, int] | None = None,
    failures: dict[str, int] | None = None,
    duration: float = 2.0,
    started: float = 100.0,
) -> RunResult:
    return RunResult(
        latencies_ms=array("d", latencies),
        server_ms=array("d", [v / 2 for v in latencies]),
        status_codes=codes if codes is not None else {200: len(latencies)},
        transport_errors=failures or {},
        started=started,
        ended=started + duration,
    )


# ---------------------------------------------------------------------------- percentiles
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0, 1, 25, 50, 90, 95, 99, 99.9, 99.99, 100]),
)
def test_percentile_matches_the_sorted_list_definition(values: list[float], p: float) -> None:
    assert percentile(sorted(values), p) == reference_percentile(values, p)


def test_percentile_of_one_sample_is_that_sample_at_every_rank() -> None:
    for p in (0, 0.1, 50, 99.9, 100):
        assert percentile([7.5], p) == 7.5


def test_percentile_edges_p0_is_min_and_p100_is_max() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 1000.0
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    # Exact decimal maths: 99.9% of 1000 is rank 999, not 1000 (floating point says 999.0000001).
    assert percentile(values, 99.9) == 999.0


def test_percentile_of_nothing_is_nan_and_out_of_range_is_an_error() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


@given(st.lists(st.floats(0.001, 1e5, allow_nan=False), min_size=1, max_size=500))
def test_histogram_counts_every_sample_once(values: list[float]) -> None:
    rows = histogram(sorted(values))
    assert sum(n for _, _, n in rows) == len(values)
    assert rows[0][0] == min(values) and rows[-1][1] == max(values)


# ------------------------------------------------------------------------------ durations
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("10", 10.0),
        ("2.5", 2.5),
        (" 1.5S ", 1.5),
        (".5s", 0.5),
    ],
)
def test_parse_duration_accepts_units_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "abc", "-1s", "1d", "10 sec", "1e3", "5 m s"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(UsageError, match="--duration"):
        parse_duration(text)


# ----------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "pct"),
    [
        ("p(95)<200", "p", "<", 200.0, 95.0),
        ("p( 99.9 ) <= 12.5ms", "p", "<=", 12.5, 99.9),
        ("p99>1", "p", ">", 1.0, 99.0),
        ("avg<50", "avg", "<", 50.0, None),
        ("mean<=50", "avg", "<=", 50.0, None),
        ("min>=0.1", "min", ">=", 0.1, None),
        ("max<1000", "max", "<", 1000.0, None),
        ("med<20", "med", "<", 20.0, None),
        ("rps>=100", "rps", ">=", 100.0, None),
        ("error_rate<0.01", "error_rate", "<", 0.01, None),
        ("error_rate<=1%", "error_rate", "<=", 0.01, None),
    ],
)
def test_parse_threshold(text: str, metric: str, op: str, value: float, pct: float | None) -> None:
    t = parse_threshold(text)
    assert (t.metric, t.op, t.percentile) == (metric, op, pct)
    assert t.value == pytest.approx(value)
    assert t.label == " ".join(text.split())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "p(95)",
        "p(95)<",
        "p(95)<<200",
        "p(95)=200",
        "p(101)<5",
        "latency<5",
        "p95<abc",
        "rps>10ms",
        "avg<5%",
        "p(95)<200 and more",
    ],
)
def test_malformed_threshold_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


@pytest.mark.parametrize(
    ("op", "actual", "holds"),
    [
        ("<", 9.9, True),
        ("<", 10.0, False),
        ("<=", 10.0, True),
        ("<=", 10.1, False),
        (">", 10.1, True),
        (">", 10.0, False),
        (">=", 10.0, True),
        (">=", 9.9, False),
    ],
)
def test_each_operator(op: str, actual: float, holds: bool) -> None:
    assert parse_threshold(f"avg{op}10").holds(actual) is holds


def test_no_data_never_satisfies_a_gate() -> None:
    assert not parse_threshold("p(99)<1e9").holds(math.nan)
    assert not parse_threshold("rps>=0").holds(math.nan)


def test_flag_thresholds_are_named_after_their_flags() -> None:
    gates = flag_thresholds(
        max_p50_ms=5, max_p95_ms=10, max_p99_ms=20, min_rps=100, max_error_rate=0
    )
    assert [g.label for g in gates] == [
        "--max-p50-ms 5",
        "--max-p95-ms 10",
        "--max-p99-ms 20",
        "--min-rps 100",
        "--max-error-rate 0",
    ]
    assert [g.expression for g in gates] == [
        "p(50)<=5",
        "p(95)<=10",
        "p(99)<=20",
        "rps>=100",
        "error_rate<=0",
    ]
    with pytest.raises(UsageError, match="--max-error-rate"):
        flag_thresholds(max_error_rate=1.5)


def test_summary_evaluates_each_metric() -> None:
    latencies = [float(v) for v in range(1, 101)]  # 1..100 ms
    result = result_of(latencies, codes={200: 90, 500: 10}, failures={"timeout": 10}, duration=2.0)
    summary = summarize(
        result,
        [
            parse_threshold("p(50)<=50"),
            parse_threshold("p(90)<90"),
            parse_threshold("avg<=50.5"),
            parse_threshold("min>=1"),
            parse_threshold("max<100"),
            parse_threshold("med<=50"),
            parse_threshold("rps>=45"),
            parse_threshold("error_rate<0.15"),
        ],
    )
    actual = {v.threshold.label: (v.actual, v.passed) for v in summary.thresholds}
    assert actual["p(50)<=50"] == (50.0, True)
    assert actual["p(90)<90"] == (90.0, False)
    assert actual["avg<=50.5"] == (50.5, True)
    assert actual["min>=1"] == (1.0, True)
    assert actual["max<100"] == (100.0, False)
    assert actual["med<=50"] == (50.0, True)
    assert actual["rps>=45"] == (45.0, True)  # 90 successes in 2 s
    assert actual["error_rate<0.15"][0] == pytest.approx(20 / 110)
    assert [v.threshold.label for v in summary.failed] == [
        "p(90)<90",
        "max<100",
        "error_rate<0.15",
    ]
    assert not summary.passed
    assert summary.rate == pytest.approx(110 / 2)


# -------------------------------------------------------------------------------- merging
def test_merging_processes_is_exact() -> None:
    a = result_of([1.0, 2.0, 3.0, 100.0], codes={200: 3, 503: 1}, started=10.0, duration=2.0)
    a.error_samples = ["HTTP 503: overloaded"]
    a.bytes_in, a.late, a.max_lag_ms = 40, 1, 3.0
    b = result_of([4.0, 5.0], failures={"timeout": 2}, started=10.5, duration=2.0)
    b.status_codes = {200: 2}
    b.error_samples = ["timeout", "HTTP 503: overloaded"]
    b.bytes_in, b.late, b.max_lag_ms = 20, 2, 7.0
    merged = merge_results([a, b])
    assert sorted(merged.latencies_ms) == [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    assert merged.status_codes == {200: 5, 503: 1}
    assert merged.transport_errors == {"timeout": 2}
    assert merged.requests == 8 and merged.successes == 5 and merged.errors == 3
    assert merged.error_samples == ["HTTP 503: overloaded", "timeout"]
    assert (merged.started, merged.ended) == (10.0, 12.5)
    assert (merged.bytes_in, merged.late, merged.max_lag_ms) == (60, 3, 7.0)
    # Percentiles of the merge are those of all the raw samples, not an average of percentiles.
    summary = summarize(merged)
    assert summary.latency.percentiles["50th"] == 3.0
    assert summary.latency.percentiles["99th"] == 100.0
    assert len(merged.server_ms) == 6


@given(st.lists(st.lists(st.floats(0, 1e4, allow_nan=False), max_size=50), min_size=1, max_size=5))
def test_merged_percentiles_equal_those_of_the_concatenation(parts: list[list[float]]) -> None:
    merged = merge_results(result_of(p) for p in parts)
    everything = [v for p in parts for v in p]
    assert merged.requests == len(everything)
    if everything:
        for p in (50, 90, 99, 99.9):
            assert summarize(merged).latency.percentiles[
                {50: "50th", 90: "90th", 99: "99th", 99.9: "99.9th"}[p]
            ] == reference_percentile(everything, p)


def test_split_int_and_plan_share_add_up_exactly() -> None:
    assert split_int(10, 3) == [4, 3, 3]
    plan = LoadPlan(concurrency=7, requests=301)
    shares = [plan.share(i, 3) for i in range(3)]
    assert sum(s.concurrency for s in shares) == 7
    assert sum(s.requests or 0 for s in shares) == 301
    assert [s.slot_index for s in shares] == [0, 1, 2]
    assert all(s.slot_stride == 3 for s in shares)


# -------------------------------------------------------------------------------- reports
def sample_summary() -> tuple[object, object]:
    target = build_target(url="http://127.0.0.1:9", payloads=Payloads(texts=("a", "b")))
    plan = LoadPlan(concurrency=4, duration=2.0)
    result = result_of([1.0, 2.0, 3.0, 4.0], codes={200: 3, 500: 1})
    result.error_samples = ["HTTP 500: boom"]
    gates = [parse_threshold("p(95)<3"), *flag_thresholds(max_error_rate=0.5)]
    return summarize(result, gates), (target, plan)


def test_json_report_uses_vegeta_like_names_in_milliseconds() -> None:
    summary, (target, plan) = sample_summary()  # type: ignore[misc]
    report = report_dict(summary, target=target, plan=plan)  # type: ignore[arg-type]
    for key in (
        "requests",
        "rate",
        "throughput",
        "duration",
        "success",
        "status_codes",
        "errors",
        "latencies",
        "server_process_time",
        "thresholds",
    ):
        assert key in report, key
    assert set(report["latencies"]) == {
        "min",
        "mean",
        "50th",
        "90th",
        "95th",
        "99th",
        "99.9th",
        "max",
    }
    assert report["requests"] == 4
    assert report["duration"] == 2000.0
    assert report["rate"] == 2.0 and report["throughput"] == 1.5
    assert report["success"] == 0.75
    assert report["status_codes"] == {"200": 3, "500": 1}
    assert report["errors"] == ["HTTP 500: boom"]
    assert report["latencies"]["50th"] == 2.0 and report["latencies"]["max"] == 4.0
    assert report["server_process_time"]["mean"] == 1.25
    assert report["time_unit"] == "ms"
    assert [t["passed"] for t in report["thresholds"]] == [False, True]
    assert report["passed"] is False
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN anywhere


def test_json_report_has_no_nan_without_any_response() -> None:
    target = build_target(url="http://127.0.0.1:9", payloads=Payloads(texts=("a",)))
    result = result_of([], codes={}, failures={"connection refused": 3})
    summary = summarize(result, [parse_threshold("p(99)<10")])
    report = report_dict(summary, target=target, plan=LoadPlan())
    json.dumps(report, allow_nan=False)
    assert report["latencies"]["50th"] is None
    assert report["thresholds"][0]["passed"] is False


def test_junit_xml_is_valid_with_one_case_per_threshold(tmp_path: Path) -> None:
    summary, (target, _) = sample_summary()  # type: ignore[misc]
    data = junit_xml(summary, target=target)  # type: ignore[arg-type]
    path = tmp_path / "junit.xml"
    path.write_bytes(data)
    root = ET.parse(path).getroot()  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["p(95)<3", "--max-error-rate 0.5"]
    failure = cases[0].find("failure")
    assert failure is not None and "p(95) = 4" in (failure.get("message") or "")
    assert cases[1].find("failure") is None


def test_ensure_ok_refuses_a_run_where_every_request_failed_in_transport() -> None:
    target = build_target(url="http://127.0.0.1:9", payloads=Payloads(texts=("a",)))
    with pytest.raises(LoadtestError, match="every request"):
        ensure_ok(result_of([], codes={}, failures={"connection refused": 5}), target)
    ensure_ok(result_of([1.0], codes={500: 1}), target)  # answered, even if badly: reached
    ensure_some_success(result_of([1.0] * 4, codes={200: 1, 500: 3}), target)


def test_ensure_some_success_refuses_a_run_without_one_successful_answer() -> None:
    target = build_target(url="http://127.0.0.1:9", payloads=Payloads(texts=("a",)))
    result = result_of([1.0] * 7, codes={422: 5, 503: 2})
    result.error_samples = ["HTTP 503: busy", "HTTP 422: 'model' is required"]
    ensure_ok(result, target)  # answered: the target was reached
    with pytest.raises(LoadtestError) as raised:
        ensure_some_success(result, target)
    # The most common answer, with what the server said.
    assert raised.value.message == (
        "no request to http://127.0.0.1:9/api/predict succeeded: 5 of 7 answered 422 "
        "(HTTP 422: 'model' is required)"
    )


def test_describe_failure_names_common_transport_errors() -> None:
    assert describe_failure(ConnectionRefusedError()) == "connection refused"
    assert describe_failure(TimeoutError()) == "timeout"
    assert describe_failure(ConnectionResetError()) == "connection reset"


# ------------------------------------------------------------------------ request building
def test_predict_bodies_carry_text_and_model() -> None:
    target = build_target(
        url="http://h:8000/", payloads=Payloads(texts=("hi", 'say "x"')), model="sentiment@prod"
    )
    assert target.url == "http://h:8000/api/predict" and target.method == "POST"
    assert [json.loads(b or b"") for b in target.bodies] == [
        {"text": "hi", "model": "sentiment@prod"},
        {"text": 'say "x"', "model": "sentiment@prod"},
    ]
    assert ("Content-Type", "application/json") in target.headers


def test_batch_bodies_hold_batch_size_texts() -> None:
    texts = tuple(f"t{i}" for i in range(10))
    target = build_target(
        url="http://h", endpoint="batch", payloads=Payloads(texts=texts), batch_size=4
    )
    assert target.url == "http://h/api/predict/batch"
    batches = [json.loads(b or b"")["texts"] for b in target.bodies]
    assert batches == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t6", "t7"]]


def test_v2_builds_open_inference_protocol_requests() -> None:
    target = build_target(
        url="http://h", endpoint="v2", payloads=Payloads(texts=("good",)), model="sentiment:3"
    )
    assert target.url == "http://h/v2/models/sentiment/versions/3/infer"
    assert json.loads(target.bodies[0] or b"") == {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good"]}]
    }
    plain = build_target(url="http://h", endpoint="v2", payloads=Payloads(texts=("a",)), model="m")
    assert plain.url == "http://h/v2/models/m/infer"
    with pytest.raises(UsageError, match="--model"):
        build_target(url="http://h", endpoint="v2", payloads=Payloads(texts=("a",)))


def test_custom_template_json_escapes_the_text() -> None:
    target = build_target(
        url="https://h",
        endpoint="custom",
        path="/score?x=1",
        body_template='{"q": "{{text}}", "n": 1}',
        payloads=Payloads(texts=('a "quoted"\nline',)),
        headers=[("X-Team", "ml")],
        api_key="s3cret",
    )
    assert target.url == "https://h/score?x=1" and target.method == "POST"
    assert json.loads(target.bodies[0] or b"") == {"q": 'a "quoted"\nline', "n": 1}
    assert ("Authorization", "Bearer s3cret") in target.headers
    assert ("X-Team", "ml") in target.headers
    get = build_target(url="http://h", endpoint="custom", path="/ping", payloads=Payloads())
    assert get.method == "GET" and get.bodies == (None,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://h"}, "only http"),
        ({"url": "file:///etc/passwd"}, "only http"),
        ({"url": "http://"}, "no host"),
        ({"url": "http://h:99999"}, "--url"),
        ({"url": "http://h", "endpoint": "custom"}, "--path"),
        ({"url": "http://h", "endpoint": "nope"}, "--endpoint"),
        (
            {"url": "http://h", "endpoint": "custom", "path": "/x", "body_template": "{bad"},
            "--body",
        ),
        ({"url": "http://h", "method": "GET"}, "--method"),
        ({"url": "http://h", "batch_size": 4}, "--batch-size"),
        ({"url": "http://h", "headers": [("Content-Length", "3")]}, "Content-Length"),
    ],
)
def test_build_target_refuses_bad_flags(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_target(payloads=Payloads(texts=("a",)), **kwargs)  # type: ignore[arg-type]


def test_parse_header() -> None:
    assert parse_header("X-Api-Key:  abc ") == ("X-Api-Key", "abc")
    for bad in ("novalue", ": v", "bad name: v"):
        with pytest.raises(UsageError, match="--header"):
            parse_header(bad)


def test_payloads_from_files(tmp_path: Path) -> None:
    txt = tmp_path / "in.txt"
    txt.write_text("first\n\n second \n", encoding="utf-8")
    assert load_payloads(txt).texts == ("first", "second")
    table = tmp_path / "in.csv"
    table.write_text("id,review\n1,great\n2,awful\n", encoding="utf-8")
    assert load_payloads(table, text_column="review").texts == ("great", "awful")
    with pytest.raises(UsageError, match="no column 'text'"):
        load_payloads(table)
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"features": [1, 2]}\n{"text": "x"}\n', encoding="utf-8")
    assert load_payloads(lines).bodies == (b'{"features": [1, 2]}', b'{"text": "x"}')
    lines.write_text('{"ok": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(UsageError, match="line 2"):
        load_payloads(lines)
    with pytest.raises(UsageError, match="does not exist"):
        load_payloads(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match=".txt, .csv or .jsonl"):
        load_payloads(tmp_path / "data.parquet")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no input"):
        load_payloads(tmp_path / "empty.txt")


def test_built_in_samples_come_from_the_bundled_corpus() -> None:
    texts = sample_texts()
    assert len(texts) > 100 and all(isinstance(t, str) and t for t in texts)
    assert load_payloads(None).texts == tuple(texts)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (LoadPlan(concurrency=0), "--concurrency"),
        (LoadPlan(rate=0.0, max_in_flight=10), "--rate"),
        (LoadPlan(rate=10.0, max_in_flight=0), "--max-in-flight"),
        (LoadPlan(duration=7200.0), "--duration"),
        (LoadPlan(requests=0), "--requests"),
        (LoadPlan(warmup=-1.0), "--warmup"),
        (LoadPlan(engine="curl"), "--engine"),
    ],
)
def test_plan_bounds(plan: LoadPlan, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan.validate()


def test_threshold_dataclass_expression() -> None:
    t = Threshold(metric="p", op="<", value=200, percentile=99.9)
    assert t.expression == "p(99.9)<200" and t.label == "p(99.9)<200"


def test_the_cli_module_imports_no_http_engine() -> None:
    """`mlserve --help` stays fast: the engines load inside the command only."""
    import subprocess
    import sys

    code = (
        "import sys, mlserve.cli.loadtest_cmd; "
        "print(sorted(m for m in ('aiohttp', 'httptools', 'uvloop', 'mlserve.loadtest') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
