"""tracing.enabled: a span per request (a child of the caller's W3C traceparent) and per model
call (batch size as an attribute), trace and span ids in the log records; off by default, and
then OpenTelemetry is not even imported. In-process with the SDK's in-memory exporter, and one
real server exporting over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags
from support.data import IRIS_FEATURES
from support.otlp import attributes, otlp_receiver
from support.servers import MlserveProcess

from mlserve.config import Settings
from mlserve.errors import ConfigError
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.server import tracing as tracing_module
from mlserve.server.app import create_app
from mlserve.server.tracing import ModelCallTracer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
FLOWER = [5.1, 3.5, 1.4, 0.2]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def access_records() -> Iterator[list[logging.LogRecord]]:
    """The access log's records while the block runs (the logger at INFO)."""
    logger = logging.getLogger("mlserve.access")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The spans of apps made in this test, kept in memory instead of sent over OTLP (all of
    them once the app's lifespan has ended: the provider is flushed when it stops)."""
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing_module, "_default_exporter", lambda: exporter)
    return exporter


def traced_app(make_settings: Callable[..., Settings], **sections: Any) -> TestClient:
    return TestClient(create_app(make_settings(tracing={"enabled": True}, **sections)))


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


# ------------------------------------------------------------------------------ in process
def test_a_request_span_continues_the_callers_trace_and_the_model_call_is_its_child(
    text_meta: ModelMetadata, make_settings: Callable[..., Settings], exported: Any
) -> None:
    with traced_app(make_settings) as client, access_records() as records:
        response = client.post(
            "/api/predict", json={"text": "lovely"}, headers={"traceparent": TRACEPARENT}
        )
    assert response.status_code == 200, response.text

    spans = by_name(exported.get_finished_spans())
    (request,) = spans["POST /api/predict"]
    (call,) = spans["predict sentiment:1"]
    assert request.kind == SpanKind.SERVER
    assert hex_ids(request)[0] == TRACE_ID
    assert request.parent is not None and trace.format_span_id(request.parent.span_id) == PARENT_ID
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/predict"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["mlserve.request_id"] == response.headers["x-request-id"]
    assert request.attributes["mlserve.model"] == "sentiment"
    assert call.parent is not None and call.parent.span_id == request.context.span_id
    assert call.attributes is not None
    assert call.attributes["mlserve.batch.size"] == 1
    assert call.attributes["mlserve.model"] == "sentiment"
    assert call.attributes["mlserve.model.version"] == "1"
    assert request.start_time is not None and call.start_time is not None
    assert call.end_time is not None and request.end_time is not None
    assert request.start_time <= call.start_time <= call.end_time <= request.end_time
    (line,) = [r for r in records if r.getMessage().startswith("POST /api/predict")]
    assert (line.trace_id, line.span_id) == hex_ids(request)  # type: ignore[attr-defined]


def test_routed_requests_are_named_by_template_and_batches_carry_their_size(
    iris_meta: ModelMetadata, make_settings: Callable[..., Settings], exported: Any
) -> None:
    with traced_app(make_settings) as client:
        assert client.post("/api/predict/batch", json={"records": [FLOWER] * 3}).status_code == 200
        assert client.get("/api/models/iris").status_code == 200
        assert client.get("/no/such/route").status_code == 404

    spans = by_name(exported.get_finished_spans())
    (batch,) = spans["POST /api/predict/batch"]
    (call,) = spans["predict iris:1"]
    assert call.attributes is not None and call.attributes["mlserve.batch.size"] == 3
    assert call.parent is not None and call.parent.span_id == batch.context.span_id
    assert batch.parent is None  # no traceparent sent: a trace of its own
    assert "GET /api/models/{name}" in spans
    (missing,) = spans["GET"]  # no route matched: named by the method alone
    assert missing.attributes is not None and missing.attributes["http.response.status_code"] == 404
    assert missing.status.status_code == StatusCode.UNSET


def test_a_failing_model_call_is_an_error_span(
    register: Callable[..., ModelMetadata],
    broken_estimator: Any,
    make_settings: Callable[..., Settings],
    exported: Any,
) -> None:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    with traced_app(make_settings) as client:
        assert client.post("/api/predict", json={"features": FLOWER}).status_code == 500

    spans = by_name(exported.get_finished_spans())
    (request,) = spans["POST /api/predict"]
    (call,) = spans["predict broken:1"]
    assert request.status.status_code == call.status.status_code == StatusCode.ERROR
    assert [event.name for event in call.events] == ["exception"]


def test_one_call_for_several_requests_is_a_child_of_the_first_and_links_the_others() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls = ModelCallTracer(provider.get_tracer("test"))
    callers = [
        SpanContext(trace_id=n, span_id=n, is_remote=False, trace_flags=TraceFlags(1))
        for n in (11, 22, 33)
    ]

    calls.call("iris:2", [*callers, None], rows=7, started=0.0, seconds=0.0, error=None)

    (span,) = exporter.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == 11
    assert [link.context.span_id for link in span.links] == [22, 33]
    assert span.attributes == {
        "mlserve.model": "iris",
        "mlserve.model.version": "2",
        "mlserve.batch.size": 7,
        "mlserve.batch.requests": 4,
    }


def test_a_call_whose_callers_were_all_sampled_out_makes_no_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls = ModelCallTracer(provider.get_tracer("test"))
    unsampled = SpanContext(trace_id=5, span_id=5, is_remote=False, trace_flags=TraceFlags(0))

    calls.call("iris:2", [unsampled], rows=1, started=0.0, seconds=0.0, error=None)
    calls.call("iris:2", [None], rows=1, started=0.0, seconds=0.0, error=None)  # a job's chunk

    (span,) = exporter.get_finished_spans()
    assert span.parent is None  # the job's call: a trace of its own


def test_tracing_is_off_by_default_and_then_no_batcher_has_a_tracer(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    state = client.app.state.mlserve  # type: ignore[attr-defined]
    assert state.settings.tracing.enabled is False
    assert state.manager.batching.tracer is None
    assert all(rt.batcher.config.tracer is None for rt in state.manager.runtimes())
    assert "traceparent" not in client.post("/api/predict", json={"features": FLOWER}).headers


def test_with_tracing_off_opentelemetry_is_not_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mlserve.config import load_settings\n"
        "from mlserve.server.app import create_app\n"
        f"create_app(load_settings(None, home={str(tmp_path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'mlserve.server.tracing'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_tracing_without_the_otel_extra_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    monkeypatch.delitem(sys.modules, "mlserve.server.tracing")
    for name in [m for m in sys.modules if m.startswith("opentelemetry.sdk")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import` now fails: as if not installed
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)

    with pytest.raises(ConfigError, match=r"tracing\.enabled needs OpenTelemetry.*\[otel\]"):
        create_app(make_settings(tracing={"enabled": True}))


# ------------------------------------------------------------------------------ a real server
@pytest.mark.slow
def test_a_real_server_exports_its_spans_over_otlp_http_and_logs_their_ids(
    start_server: Callable[..., MlserveProcess], tmp_path: Path, iris_estimator: Any
) -> None:
    registry = Registry(tmp_path / "served")
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    with otlp_receiver() as receiver:
        server = start_server(
            registry.root,
            log_level=None,
            args=["--log-format", "json"],
            env={
                "MLSERVE_TRACING__ENABLED": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_SERVICE_NAME": "mlserve-under-test",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            },
        )
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            answer = http.post(
                "/api/predict", json={"features": FLOWER}, headers={"traceparent": TRACEPARENT}
            )
        assert answer.status_code == 200, answer.text
        assert server.terminate() == 0  # a graceful stop exports what is still buffered
        spans = receiver.spans()

    assert spans, server.output()
    assert {resource["service.name"] for resource, _ in spans} == {"mlserve-under-test"}
    ours = [span for _, span in spans if span.trace_id.hex() == TRACE_ID]
    names = {span.name: span for span in ours}
    request, call = names["POST /api/predict"], names["predict iris:1"]
    assert request.parent_span_id.hex() == PARENT_ID
    assert call.parent_span_id == request.span_id
    assert attributes(call.attributes)["mlserve.batch.size"] == 1
    assert attributes(request.attributes)["mlserve.request_id"] == answer.headers["x-request-id"]
    records = [json.loads(line) for line in server.output().splitlines()]
    (access,) = [
        r for r in records if r["logger"] == "mlserve.access" and r["path"] == "/api/predict"
    ]
    assert (access["trace_id"], access["span_id"]) == (TRACE_ID, request.span_id.hex())
