"""Prometheus metrics, on a registry made per app so two apps in one process never collide."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from mlserve import __version__
from mlserve.schemas import ModelMetadata
from mlserve.serving.runtimes import ServedModel, loaded_metadata

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CHUNK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess() -> bool:
    """prometheus_client's multiprocess mode (`serve --workers N`): every process writes its
    samples to files in PROMETHEUS_MULTIPROC_DIR, and a scrape adds them up."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _distribution_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


class InfoCollector(Collector):
    """`mlserve_build_info` (this build) and `mlserve_model_info` (each loaded model version),
    value 1, read when scraped: a version unloaded, evicted or swapped out is gone from the
    next scrape without anyone removing it."""

    def __init__(self) -> None:
        self.build = (
            __version__,
            platform.python_version(),
            _distribution_version("scikit-learn"),
        )
        self.models: Callable[[], Iterable[ModelMetadata]] = tuple

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "mlserve_build_info",
            "This server's build: mlserve, Python and scikit-learn versions (value 1).",
            labels=["version", "python", "sklearn"],
        )
        build.add_metric(list(self.build), 1)
        yield build
        models = GaugeMetricFamily(
            "mlserve_model_info",
            "One series (value 1) per model version loaded in this process: its registry "
            "version, artifact checksum and format.",
            labels=["model", "version", "sha256", "format"],
        )
        for meta in self.models():
            models.add_metric([meta.name, str(meta.version), meta.sha256, meta.format], 1)
        yield models


class ServerMetrics:
    """Every collector the server exports, bound to one CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series (the creation time of every counter and histogram child, which
        # doubles the series for little use). The switch is prometheus_client's, process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # Read at scrape time; in multiprocess mode they are added to the merged scrape (render).
        self.info = InfoCollector()
        self.platform = PlatformCollector(registry=None)  # python_info
        # process_* and python_gc_*: in multiprocess mode they are left out, as each
        # process's CPU, memory and collections cannot be added up across the workers.
        if not multiprocess():
            r.register(self.info)
            r.register(self.platform)
            ProcessCollector(registry=r)
            GCCollector(registry=r)
        self.requests = Counter(
            "mlserve_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "mlserve_http_request_duration_seconds",
            "HTTP request latency by method, route template and status code.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.connections_refused = Counter(
            "mlserve_connections_refused_total",
            "Connections refused (503, then closed) past server.limit_concurrency.",
            registry=r,
        )
        self.in_flight = Gauge(
            "mlserve_http_requests_in_flight",
            "HTTP requests being processed.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter(
            "mlserve_predictions_total",
            "Predictions by model, version and predicted class (empty for models without a "
            "class list, such as regressors).",
            ["model", "version", "predicted_class"],
            registry=r,
        )
        self.prediction_latency = Histogram(
            "mlserve_prediction_duration_seconds",
            "Time of one vectorized model call (a batch).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mlserve_batch_size",
            "Rows per model call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "mlserve_queue_depth",
            "Requests waiting for a model call.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.models_loaded = Gauge(
            "mlserve_models_loaded",
            "Model versions loaded and serving.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_load_seconds = Histogram(
            "mlserve_model_load_duration_seconds",
            "Time to read, verify and unpickle a model version.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        # server.max_loaded / memory_budget_mb: models loaded on demand, unloaded to make room.
        self.model_loads = Counter(
            "mlserve_model_loads_total",
            "Model versions loaded (at startup, on a request, on a reload), by model.",
            ["model"],
            registry=r,
        )
        self.model_evictions = Counter(
            "mlserve_model_evictions_total",
            "Model versions unloaded to fit server.max_loaded or memory_budget_mb, by model.",
            ["model"],
            registry=r,
        )
        self.cold_start_seconds = Histogram(
            "mlserve_model_cold_start_seconds",
            "Time a request waited for its model to load (a model not loaded because of "
            "server.max_loaded or memory_budget_mb).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.models_estimated_bytes = Gauge(
            "mlserve_models_estimated_bytes",
            "Estimated memory of the loaded model versions (what memory_budget_mb counts), "
            "until each unloaded one has drained.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            "mlserve_errors_total",
            "Error responses by error code.",
            ["code"],
            registry=r,
        )
        # Traffic control: prediction cache, shadow traffic, degraded versions, hot reload.
        self.cache_hits = Counter(
            "mlserve_cache_hits_total",
            "Predictions answered from the prediction cache, by model.",
            ["model"],
            registry=r,
        )
        self.cache_misses = Counter(
            "mlserve_cache_misses_total",
            "Predictions looked up in the cache and computed by the model, by model.",
            ["model"],
            registry=r,
        )
        self.cache_evictions = Counter(
            "mlserve_cache_evictions_total",
            "Cached predictions dropped to make room (least recently used), by model.",
            ["model"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "mlserve_cache_entries",
            "Predictions held in this process's cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shadow_predictions = Counter(
            "mlserve_shadow_predictions_total",
            "Shadow predictions by model, live version, shadow version, and whether the "
            "shadow's label agreed with the live answer.",
            ["model", "version", "shadow_version", "agreement"],
            registry=r,
        )
        self.shadow_latency = Histogram(
            "mlserve_shadow_duration_seconds",
            "Time of one shadow model call (a batch of mirrored requests).",
            ["model", "shadow_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlserve_shadow_dropped_total",
            "Mirrored requests dropped because the shadow's queue was full.",
            ["model", "shadow_version"],
            registry=r,
        )
        self.shadow_errors = Counter(
            "mlserve_shadow_errors_total",
            "Mirrored requests the shadow version failed to predict.",
            ["model", "shadow_version"],
            registry=r,
        )
        self.model_degraded = Gauge(
            "mlserve_model_degraded",
            "1 while a model version fails fast after consecutive failed predictions.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.model_swaps = Counter(
            "mlserve_model_swaps_total",
            "Serving-version swaps (hot reloads that changed the version), by model.",
            ["model"],
            registry=r,
        )

        # Async jobs: submitted by the servers, scored and finished by whoever runs them (the
        # servers' JobRunner, or `mlserve worker` with redis.url, which exports them itself).
        self.jobs_submitted = Counter(
            "mlserve_jobs_submitted_total",
            "Async jobs accepted (202), by model.",
            ["model"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "mlserve_jobs_finished_total",
            "Async jobs that ended, by model and status: succeeded, failed or cancelled "
            "(counted by the process that scored or cancelled them).",
            ["model", "status"],
            registry=r,
        )
        self.job_rows = Counter(
            "mlserve_job_rows_total",
            "Rows of async jobs scored, by model.",
            ["model"],
            registry=r,
        )
        self.job_chunk_latency = Histogram(
            "mlserve_job_chunk_duration_seconds",
            "Time to score one chunk of an async job (jobs.chunk_size rows), by model.",
            ["model"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self.jobs_running = Gauge(
            "mlserve_jobs_running",
            "Async jobs this process is working on.",
            registry=r,
            multiprocess_mode="livesum",
        )

        # Feedback and live model quality (gauges refreshed every feedback.metrics_interval_s
        # by each process from the shared store: every process reports the same figure).
        self.feedback = Counter(
            "mlserve_feedback_total",
            "True labels received (POST /api/feedback) by model and outcome: accepted, replaced "
            "(a later label for the same prediction, counted once in the figures), unknown (no "
            "such prediction kept; model empty), invalid (not a class of the model).",
            ["model", "outcome"],
            registry=r,
        )
        self.feedback_dropped = Counter(
            "mlserve_feedback_dropped_total",
            "Predictions not remembered for feedback: the buffer was full "
            "(feedback.buffer_size) or the feedback store could not be opened.",
            registry=r,
        )
        self.live_accuracy = Gauge(
            "mlserve_model_live_accuracy_ratio",
            "Accuracy (0 to 1) of the last feedback.window labelled predictions of a model "
            "version.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.live_labelled = Gauge(
            "mlserve_model_live_labelled",
            "Labelled predictions behind mlserve_model_live_accuracy_ratio (at most "
            "feedback.window).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.holdout_accuracy = Gauge(
            "mlserve_model_holdout_accuracy_ratio",
            "Accuracy (0 to 1) on the hold-out set recorded in the registry when the version "
            "was trained.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.drift_psi = Gauge(
            "mlserve_prediction_drift_psi",
            "Population stability index of the predicted-class distribution of recent "
            "predictions against the hold-out set's (0.1 moderate, 0.25 significant).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.confidence_psi = Gauge(
            "mlserve_confidence_drift_psi",
            "Population stability index of the confidence histogram of recent predictions "
            "against the hold-out set's.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

        self.rollout_step = Gauge(
            "mlserve_rollout_step",
            "Step of the model's running rollout (1 is the first; 0: none running).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_weight = Gauge(
            "mlserve_rollout_weight_ratio",
            "The rollout candidate's share of the model's traffic, 0 to 1 (0: none running).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_events = Counter(
            "mlserve_rollout_events_total",
            "Rollout events by model: started, step (moved to the next), promoted, "
            "rolled_back, aborted.",
            ["model", "event"],
            registry=r,
        )

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges (in-flight requests, models
        loaded) from the aggregate when it stops."""
        if multiprocess():
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def export_models(self, models: Mapping[str, ServedModel]) -> None:
        """Export every version loaded in `models` (a ModelManager's, read at each scrape) as
        `mlserve_model_info`: the server's and `mlserve worker`'s."""
        self.info.models = lambda: loaded_metadata(models)

    def render(self) -> bytes:
        """The text exposition; aggregates all workers when multiprocess mode is on (with the
        build, model and Python information of the process answering the scrape)."""
        if multiprocess():
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            merged.register(self.info)
            merged.register(self.platform)
            return generate_latest(merged)
        return generate_latest(self.registry)
