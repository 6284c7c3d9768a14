"""OpenTelemetry tracing (tracing.enabled, the otel extra): a span per request and per model
call, exported over OTLP/HTTP, and the trace and span ids in every log record made meanwhile.

Imported only when tracing is on: with it off, nothing here runs and OpenTelemetry is not
imported. Where spans go, under what service name and how many are kept is the SDK's own
environment: OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*. An incoming
W3C `traceparent` (with `tracestate`, and `baggage`; OTEL_PROPAGATORS chooses) makes the
request's span a child of the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve import __version__

__all__ = ["ModelCallTracer", "Tracing", "TracingMiddleware", "log_trace_ids"]

DEFAULT_SERVICE_NAME = "mlserve"
# A model call's span has the first traced caller as its parent and links to the others.
MAX_LINKS = 128


def _resource() -> Resource:
    """The SDK's resource from the environment; service.name "mlserve" unless it names one."""
    detected = Resource.create({SERVICE_VERSION: __version__})
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return detected


def _default_exporter() -> SpanExporter:
    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_* variables


class Tracing:
    """One app's tracer provider (not the process-global one: two apps never share spans, and
    FastAPI's own instrumentation, which follows the global provider, stays off)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("mlserve", __version__)
        self.model_calls = ModelCallTracer(self.tracer)

    @classmethod
    def start(cls, exporter: SpanExporter | None = None) -> Tracing:
        """A provider exporting through `exporter` (default: OTLP over HTTP) in batches, off
        the event loop; the log records get the trace and span ids (log_trace_ids)."""
        provider = TracerProvider(resource=_resource())  # sampler: OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(exporter or _default_exporter()))
        log_trace_ids()
        return cls(provider)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return TracingMiddleware(app, tracer=self.tracer)

    async def close(self) -> None:
        """Export what is still buffered, then stop (on a thread: an unreachable collector
        holds it up to the exporter's timeout, not the event loop)."""
        await asyncio.to_thread(self.provider.shutdown)


# ------------------------------------------------------------------------------ requests
def _carrier(scope: Scope, fields: frozenset[str]) -> dict[str, str]:
    """The propagation headers of a request (traceparent, tracestate, baggage)."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1")
        if name in fields:
            text = value.decode("latin-1")
            found[name] = f"{found[name]},{text}" if name in found else text
    return found


class TracingMiddleware:
    """The outermost layer: one SERVER span per HTTP request, current while every inner layer
    runs (the access log line is written inside it), named by the route template once known."""

    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer
        self.propagator = propagate.get_global_textmap()
        self.fields = frozenset(self.propagator.fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = self.propagator.extract(_carrier(scope, self.fields))
        method = scope.get("method", "")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
        }
        if scope.get("http_version"):
            attributes["network.protocol.version"] = scope["http_version"]
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        span = self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.record_exception(exc)
            status = status or 500
            raise
        finally:
            _finish(span, scope, method, status)
            otel_context.detach(token)
            span.end()


def _finish(span: trace.Span, scope: Scope, method: str, status: int) -> None:
    state: Mapping[str, Any] = scope.get("state", {})
    route = getattr(scope.get("route"), "path", None) or state.get("route")
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500 or not status:
        span.set_status(StatusCode.ERROR)
    for key, attribute in (
        ("request_id", "mlserve.request_id"),
        ("model", "mlserve.model"),
        ("version", "mlserve.model.version"),
    ):
        value = state.get(key)
        if value is not None:
            span.set_attribute(attribute, value)


# ------------------------------------------------------------------------------ model calls
class ModelCallTracer:
    """The batchers' CallTracer (mlserve.runtime.batcher): one INTERNAL span per model call,
    child of the first traced request in its batch and linked to the others, with the batch
    size; a call for no traced request (an async job's chunk) is a trace of its own, and one
    whose callers were all sampled out makes no span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def context(self) -> object:
        return trace.get_current_span().get_span_context()

    def call(
        self,
        name: str,
        contexts: list[object],
        rows: int,
        started: float,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        valid = [c for c in contexts if isinstance(c, SpanContext) and c.is_valid]
        traced = [c for c in valid if c.trace_flags.sampled]
        if valid and not traced:
            return  # every caller's trace was sampled out: so is the call (no span at all)
        # perf_counter times to wall-clock nanoseconds: this runs just after the call ended.
        end_ns = time.time_ns() - int((time.perf_counter() - started - seconds) * 1e9)
        start_ns = end_ns - int(seconds * 1e9)
        parent = (
            trace.set_span_in_context(NonRecordingSpan(traced[0]))
            if traced
            else otel_context.Context()  # no caller traced: a root span
        )
        model, _, version = name.partition(":")
        span = self.tracer.start_span(
            f"predict {name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            links=[Link(c) for c in traced[1 : MAX_LINKS + 1]],
            start_time=start_ns,
            attributes={
                "mlserve.model": model,
                "mlserve.model.version": version,
                "mlserve.batch.size": rows,
                "mlserve.batch.requests": len(contexts),
            },
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, type(error).__name__)
        span.end(end_time=end_ns)


# ------------------------------------------------------------------------------ log records
def log_trace_ids() -> None:
    """Every log record made while a span is current carries its `trace_id` and `span_id` (hex,
    as trace backends show them): JSON records as fields, text lines at their end. Installed
    once per process, as a log record factory (handlers are rebuilt by setup_logging, a
    record factory is not); a record made outside any span is left as it is."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_trace_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = trace.format_trace_id(span_context.trace_id)
            record.span_id = trace.format_span_id(span_context.span_id)
        return record

    factory.adds_trace_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
