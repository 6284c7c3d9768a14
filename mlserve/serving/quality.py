"""Feedback and live quality in the server: labels in, quality reports out, and the
live-accuracy and drift metrics, refreshed on a background interval (never per request)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from mlserve.errors import MlserveError, NotFoundError
from mlserve.feedback import (
    WINDOWS,
    FeedbackDisabledError,
    FeedbackRecorder,
    FeedbackStore,
    FeedbackUnavailableError,
    StoredPrediction,
    Tally,
    VersionData,
    label_key,
    match_label,
    open_feedback_store,
)
from mlserve.schemas import (
    ClassDrift,
    ConfidenceDrift,
    ConfusionMatrix,
    DriftReport,
    FeedbackResult,
    LiveFigures,
    ModelMetadata,
    QualityReport,
    RollingFigures,
    TrainingFigures,
    VersionQuality,
)
from mlserve.serving import drift

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings
    from mlserve.serving.manager import ModelManager
    from mlserve.serving.metrics import ServerMetrics

log = logging.getLogger(__name__)

METADATA_CACHE = 256  # (model, version) metadata kept (they never change once registered)


# ---------------------------------------------------------------------------- pure figures
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def training_figures(meta: ModelMetadata | None) -> TrainingFigures:
    """The hold-out figures the registry recorded (whatever is missing stays null)."""
    if meta is None:
        return TrainingFigures()
    metrics, training = meta.metrics, meta.training
    histogram = training.get("confidence_histogram")
    n_test = metrics.get("n_test")
    return TrainingFigures(
        accuracy=_number(metrics.get("accuracy")),
        macro_f1=_number(metrics.get("macro_f1")),
        n_test=n_test if isinstance(n_test, int) and not isinstance(n_test, bool) else None,
        class_distribution=training.get("class_distribution"),
        predicted_class_distribution=training.get("predicted_class_distribution"),
        confidence_histogram=histogram if isinstance(histogram, dict) else None,
        mean_confidence=_number(training.get("mean_confidence")),
    )


def live_figures(pairs: Mapping[tuple[str, str], int]) -> LiveFigures:
    fig = drift.figures(pairs)
    return LiveFigures(
        labelled=fig.count, correct=fig.correct, accuracy=fig.accuracy, macro_f1=fig.macro_f1
    )


def drift_report(
    recent: Tally,
    training: TrainingFigures,
    *,
    min_predictions: int,
    window_s: float,
) -> DriftReport:
    """Recent predictions' class shares and confidence histogram against the hold-out set's."""
    total = sum(c.n for c in recent.values())
    confidence_n = sum(c.confidence_n for c in recent.values())
    base: dict[str, Any] = {"predictions": total, "window_s": window_s, "psi": None}
    if confidence_n:
        base["live_mean_confidence"] = sum(c.confidence_sum for c in recent.values()) / (
            confidence_n
        )
    expected = training.predicted_class_distribution
    if not expected:
        return DriftReport(
            status="unavailable",
            reason="the registry has no hold-out figures for this version (models trained "
            "with `mlserve train` have them)",
            **base,
        )
    if total < min_predictions:
        return DriftReport(
            status="insufficient_data",
            reason=f"{total} recent predictions; drift needs at least {min_predictions} "
            "(feedback.drift_min_predictions)",
            **base,
        )
    labels = list(expected) + sorted(set(recent) - set(expected))
    training_shares = drift.shares([float(expected.get(label, 0.0)) for label in labels])
    live_shares = drift.shares(
        [float(recent[label].n) if label in recent else 0.0 for label in labels]
    )
    terms = drift.psi_terms(training_shares, live_shares)
    class_psi = sum(terms)
    classes = [
        ClassDrift(label=label, training=e, live=a, psi=t)
        for label, e, a, t in zip(labels, training_shares, live_shares, terms, strict=True)
    ]
    confidence: ConfidenceDrift | None = None
    histogram = training.confidence_histogram
    if histogram and confidence_n:
        edges = [float(e) for e in histogram.get("edges", [])]
        fractions = [float(f) for f in histogram.get("fractions", [])]
        if len(edges) >= 2 and len(fractions) == len(edges) - 1:
            fine = [sum(col) for col in zip(*(c.bins for c in recent.values()), strict=True)]
            live_hist = drift.shares(drift.rebin(fine, edges))
            confidence = ConfidenceDrift(
                edges=edges,
                training=fractions,
                live=live_hist,
                psi=drift.psi(fractions, live_hist),
            )
    # The status follows the class PSI: with 10 bins, the confidence PSI of two samples of one
    # distribution is already about 9 * (1/n + 1/n_test) from sampling alone.
    return DriftReport(
        status=drift.drift_status(class_psi),
        classes=classes,
        confidence=confidence,
        **{**base, "psi": class_psi},
    )


def version_quality(
    version: int,
    data: VersionData,
    meta: ModelMetadata | None,
    *,
    serving: bool,
    window: int,
    min_predictions: int,
    drift_window_s: float,
) -> VersionQuality:
    rolling_pairs = drift.count_pairs(data.rolling)
    rolling = live_figures(rolling_pairs)
    classes = [label_key(c) for c in (meta.classes or [])] if meta is not None else []
    labels, matrix = drift.confusion_matrix(rolling_pairs, classes)
    training = training_figures(meta)
    return VersionQuality(
        version=version,
        serving=serving,
        predictions=data.predictions,
        feedback=data.labelled,
        rolling=RollingFigures(window=window, **rolling.model_dump()),
        windows={name: live_figures(pairs) for name, pairs in data.windows.items()},
        confusion_matrix=ConfusionMatrix(labels=labels, matrix=matrix),
        drift=drift_report(
            data.recent, training, min_predictions=min_predictions, window_s=drift_window_s
        ),
        training=training,
    )


# ---------------------------------------------------------------------------- the service
class QualityService:
    """Owns the feedback recorder and store of one app; answers feedback and quality requests
    and keeps the quality gauges current."""

    def __init__(
        self,
        *,
        settings: Settings,
        manager: ModelManager,
        metrics: ServerMetrics,
        redis: RedisBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = settings.feedback
        self.manager = manager
        self.metrics = metrics
        self.redis = redis
        self.clock = clock
        self.recorder = FeedbackRecorder(
            buffer_size=self.config.buffer_size,
            flush_interval_s=self.config.flush_interval_s,
            clock=clock,
            on_drop=metrics.feedback_dropped.inc,
        )
        self.store: FeedbackStore | None = None
        self.error: str | None = None  # why the store is not there
        self._meta: collections.OrderedDict[tuple[str, int], ModelMetadata | None] = (
            collections.OrderedDict()
        )
        self._published: dict[str, set[tuple[str, str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._refresh_failing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the store and start flushing and the metrics refresh. A store that cannot be
        opened turns feedback off (503) while predictions go on, unrecorded."""
        try:
            store = await open_feedback_store(self.settings, redis=self.redis)
        except (OSError, sqlite3.Error, MlserveError) as exc:
            where = "redis" if self.redis is not None else str(self.settings.feedback_database)
            self.error = f"the feedback store {where} cannot be opened"
            log.error("%s; feedback is off: %s", self.error, exc)
            self.recorder.buffer_size = 0  # nothing is kept (and drops are counted)
            return
        self.store = store
        self.recorder.store = store
        self.recorder.start()
        self._task = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="quality-metrics"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.recorder.close(timeout=self.settings.server.graceful_timeout)
        if self.store is not None:
            await self.store.close()

    def _require_store(self) -> FeedbackStore:
        if not self.config.enabled:
            raise FeedbackDisabledError("feedback is off on this server (feedback.enabled)")
        if self.store is None:
            raise FeedbackUnavailableError(self.error or "the feedback store is not open yet")
        return self.store

    def _unavailable(self, exc: Exception) -> MlserveError:
        if isinstance(exc, MlserveError):
            return exc
        log.error("feedback store error: %s: %s", type(exc).__name__, exc)
        return FeedbackUnavailableError(
            f"the feedback store failed ({type(exc).__name__}); try again later"
        )

    # ------------------------------------------------------------------ metadata
    async def metadata(self, name: str, version: int) -> ModelMetadata | None:
        """A version's registry metadata (classes, hold-out figures); None once deleted."""
        key = (name, version)
        if key in self._meta:
            return self._meta[key]
        meta: ModelMetadata | None = None
        for runtime in self.manager.runtimes():
            if runtime.model.name == name and runtime.model.version == version:
                meta = runtime.model.metadata
                break
        if meta is None:
            try:
                meta = await asyncio.to_thread(self.manager.registry.metadata, name, version)
            except NotFoundError:
                meta = None
        self._meta[key] = meta
        while len(self._meta) > METADATA_CACHE:
            self._meta.popitem(last=False)
        return meta

    # ------------------------------------------------------------------ feedback
    async def submit(self, items: Sequence[tuple[str, Any]]) -> list[FeedbackResult]:
        """Store true labels; one result per item, in order (a request id twice in one call:
        the second label replaces the first)."""
        store = self._require_store()
        try:
            await self.recorder.flush()  # this process's latest predictions first
            found = await store.lookup([request_id for request_id, _ in items])
        except Exception as exc:
            raise self._unavailable(exc) from None
        results: list[FeedbackResult | None] = [None] * len(items)
        writes: list[tuple[str, str]] = []
        pending: list[tuple[int, StoredPrediction, str]] = []
        for i, (request_id, label) in enumerate(items):
            record = found.get(request_id)
            if record is None:
                results[i] = _unknown(request_id, self.config.retention_s)
                continue
            error, key = await self._check_label(record, label)
            if key is None:
                results[i] = FeedbackResult(
                    request_id=request_id,
                    outcome="invalid",
                    model=record.model,
                    version=record.version,
                    predicted=record.predicted,
                    error=error,
                )
                continue
            writes.append((request_id, key))
            pending.append((i, record, key))
        if writes:
            try:
                outcomes = await store.set_labels(writes)
            except Exception as exc:
                raise self._unavailable(exc) from None
            for (i, record, key), outcome in zip(pending, outcomes, strict=True):
                if outcome == "unknown":  # expired or evicted since the lookup
                    results[i] = _unknown(record.id, self.config.retention_s)
                    continue
                results[i] = FeedbackResult(
                    request_id=record.id,
                    outcome=outcome,
                    model=record.model,
                    version=record.version,
                    predicted=record.predicted,
                    label=key,
                    correct=key == record.predicted,
                )
        done = [r for r in results if r is not None]
        for result in done:
            self.metrics.feedback.labels(result.model or "", result.outcome).inc()
        return done

    async def _check_label(self, record: StoredPrediction, label: Any) -> tuple[str, str | None]:
        """(why not, None) or ("", the class key) for a label of this prediction's model."""
        ref = f"{record.model}:{record.version}"
        meta = await self.metadata(record.model, record.version)
        if meta is None:
            return f"model {ref} is no longer in the registry", None
        if meta.task == "tabular-regression" or not meta.classes:
            what = {
                "tabular-regression": "a regression model",
                "tabular-multilabel": "a multilabel model",
                "clustering": "a clusterer",
            }.get(meta.task, "a model without a class list")
            return f"model {ref} is {what}: feedback takes class labels", None
        key = match_label(label, meta.classes)
        if key is None:
            shown = ", ".join(label_key(c) for c in meta.classes[:20])
            more = ", …" if len(meta.classes) > 20 else ""
            return f"label {label!r:.80} is not a class of model {ref} ({shown}{more})", None
        return "", key

    # ------------------------------------------------------------------ quality
    async def report(self, name: str, version: int | None, window: int | None) -> QualityReport:
        """Per version: live figures, confusion matrix, drift and the training figures."""
        store = self._require_store()
        window = window or self.config.window
        served = self.manager.models.get(name)
        serving = served.current.version if served is not None and served.current else None
        try:
            await self.recorder.flush()  # this process's latest predictions count too
            known = await store.versions(name)
        except Exception as exc:
            raise self._unavailable(exc) from None
        if version is not None:
            if version not in known:  # 404 unless the registry has it
                await asyncio.to_thread(self.manager.registry.metadata, name, version)
            versions = [version]
        else:
            versions = sorted(set(known) | ({serving} if serving is not None else set()))
            if not versions and served is None:
                await asyncio.to_thread(self.manager.registry.versions, name)  # 404 if unknown
        out = []
        for v in versions:
            try:
                data = await store.version_data(
                    name,
                    v,
                    rolling=window,
                    windows=WINDOWS,
                    drift_window_s=self.config.drift_window_s,
                )
            except Exception as exc:
                raise self._unavailable(exc) from None
            out.append(
                version_quality(
                    v,
                    data,
                    await self.metadata(name, v),
                    serving=v == serving,
                    window=window,
                    min_predictions=self.config.drift_min_predictions,
                    drift_window_s=self.config.drift_window_s,
                )
            )
        return QualityReport(
            model=name, window=window, retention_s=self.config.retention_s, versions=out
        )

    # ------------------------------------------------------------------ metrics
    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh_metrics()
            except Exception as exc:  # noqa: BLE001 - logged once per failure streak
                if not self._refresh_failing:
                    self._refresh_failing = True
                    log.warning("cannot refresh the live quality metrics: %s", exc)
            else:
                self._refresh_failing = False
            await asyncio.sleep(self.config.metrics_interval_s)  # the refresh interval

    async def refresh_metrics(self) -> None:
        """Set the live-accuracy, drift and hold-out gauges of every version that has
        remembered predictions or is loaded; drop the series of versions that have neither."""
        store = self.store
        if store is None:
            return
        await self.recorder.flush()
        keys = set(await store.keys())
        loaded = {(r.model.name, r.model.version) for r in self.manager.runtimes()}
        metrics = self.metrics
        seen: dict[str, set[tuple[str, str]]] = {
            name: set() for name in ("holdout", "live", "labelled", "drift", "confidence")
        }
        for name, version in sorted(keys | loaded):
            labels = (name, str(version))
            meta = await self.metadata(name, version)
            training = training_figures(meta)
            if training.accuracy is not None:
                metrics.holdout_accuracy.labels(*labels).set(training.accuracy)
                seen["holdout"].add(labels)
            if (name, version) not in keys:
                continue
            data = await store.version_data(
                name,
                version,
                rolling=self.config.window,
                windows=None,
                drift_window_s=self.config.drift_window_s,
            )
            figures = drift.figures(drift.count_pairs(data.rolling))
            if figures.accuracy is not None:
                metrics.live_accuracy.labels(*labels).set(figures.accuracy)
                metrics.live_labelled.labels(*labels).set(figures.count)
                seen["live"].add(labels)
                seen["labelled"].add(labels)
            report = drift_report(
                data.recent,
                training,
                min_predictions=self.config.drift_min_predictions,
                window_s=self.config.drift_window_s,
            )
            if report.psi is not None:
                metrics.drift_psi.labels(*labels).set(report.psi)
                seen["drift"].add(labels)
            if report.confidence is not None:
                metrics.confidence_psi.labels(*labels).set(report.confidence.psi)
                seen["confidence"].add(labels)
        gauges: dict[str, Gauge] = {
            "holdout": metrics.holdout_accuracy,
            "live": metrics.live_accuracy,
            "labelled": metrics.live_labelled,
            "drift": metrics.drift_psi,
            "confidence": metrics.confidence_psi,
        }
        for kind, gauge in gauges.items():
            for labels in self._published.get(kind, set()) - seen[kind]:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._published = seen


def _unknown(request_id: str, retention_s: float) -> FeedbackResult:
    return FeedbackResult(
        request_id=request_id,
        outcome="unknown",
        error=f"no prediction with id '{request_id:.200}' is kept (unknown, or older than "
        f"feedback.retention_s = {retention_s:g} s)",
    )
