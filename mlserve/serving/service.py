"""The one prediction path: model choice, cache, batcher, metrics, shadow and feedback.

The fast lane (server/middleware/fastlane.py), the FastAPI prediction routes, the V2 inference
route and the job runner all call this service, so they cannot drift apart. It knows nothing
of HTTP: callers pass who the request is for as a lazily computed client key (A/B buckets)
and the request id that names the prediction for feedback.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlserve.errors import InvalidInputError, MlserveError
from mlserve.runtime.breaker import ModelDegradedError
from mlserve.runtime.model import Prediction
from mlserve.serving.manager import InputKind, ModelManager, Runtime
from mlserve.serving.metrics import ServerMetrics
from mlserve.serving.traffic import TrafficController, forget_split_pick, reprepare

if TYPE_CHECKING:
    from mlserve.feedback import FeedbackRecorder
    from mlserve.serving.rollout import RolloutController

__all__ = [
    "ClientKey",
    "InputKind",
    "PredictionService",
    "Scored",
    "ScoredBatch",
    "count_predictions",
    "input_kind",
    "prediction_fields",
]

ClientKey = Callable[[], str]
"""Who a request is for (X-Client-ID, principal or address), computed only when a split
needs it."""


def input_kind(text: str | None, features: Any) -> InputKind:
    """What one input sends (it picks the default model): text, or a row of features."""
    if (text is None) == (features is None):
        raise InvalidInputError("send exactly one of 'text' or 'features'")
    return "text" if text is not None else "tabular"


def prediction_fields(p: Prediction) -> dict[str, Any]:
    """The wire fields of one answer: prediction, confidence, probabilities, and scores (null
    but for models that give raw scores instead of probabilities)."""
    return {
        "prediction": p.label,
        "confidence": p.confidence,
        "probabilities": p.probabilities,
        "scores": p.scores,
    }


@dataclass(frozen=True, slots=True)
class Scored:
    """One input's answer, the runtime that gave it, and the cache outcome (None: cache off)."""

    runtime: Runtime
    prediction: Prediction
    cache_hit: bool | None


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Several inputs' answers in input order, and how many came from the cache (None: off)."""

    runtime: Runtime
    predictions: list[Prediction]
    cache_hits: int | None


class PredictionService:
    """Chooses the runtime for a request and scores prepared rows through its batcher, with
    the cache, metrics, shadow mirroring and feedback recording every path shares."""

    def __init__(
        self,
        *,
        manager: ModelManager,
        traffic: TrafficController,
        metrics: ServerMetrics,
        feedback: FeedbackRecorder | None = None,
    ) -> None:
        self.manager = manager
        self.traffic = traffic
        self.metrics = metrics
        self.feedback = feedback  # set in the lifespan once the store is open
        # Counts each version's answers while its model has a rollout running (the guards).
        self.rollouts: RolloutController | None = None

    async def choose(
        self,
        reference: str | None,
        version: int | str | None,
        client: ClientKey,
        *,
        kind: InputKind | None = None,
    ) -> Runtime:
        """The runtime for a request: an explicit version or alias wins; a bare name with an
        A/B split goes to the client's bucket; else the serving version. Without a model
        name, `kind` (text or tabular: what the request sends) picks the default model."""
        if self.traffic.splits:  # one attribute test while no split is set
            return await self.traffic.select(reference, version, client, kind=kind)
        forget_split_pick()
        return await self.manager.get(reference, version, kind=kind)

    async def predict(
        self,
        runtime: Runtime,
        *,
        text: str | None,
        features: Any,
        request_id: str | None,
    ) -> Scored:
        """Score one text or one row of features (exactly one of them)."""
        input_kind(text, features)
        row = runtime.model.prepare(text=text, features=features)
        traffic = self.traffic
        rollouts = self._watching(runtime)
        started = time.perf_counter() if rollouts is not None else 0.0
        try:
            if traffic.cache is None:
                result, hit = await runtime.batcher.submit(row), None
            else:
                result, hit = await traffic.predict(runtime, row)
        except Exception as exc:
            if rollouts is not None:
                rollouts.observe(runtime, time.perf_counter() - started, failed=_is_5xx(exc))
            if isinstance(exc, ModelDegradedError) and traffic.splits:
                serving = traffic.instead_of(runtime)
                if serving is not None:  # a split's pick that degraded after it was picked
                    return await self.predict(
                        serving, text=text, features=features, request_id=request_id
                    )
            raise
        if rollouts is not None:
            rollouts.observe(runtime, time.perf_counter() - started, failed=False)
        self.count(runtime, (result,))
        if traffic.shadows:
            traffic.mirror(runtime, (row,), (result,))
        feedback = self.feedback
        if feedback is not None and request_id is not None:
            model = runtime.model
            feedback.record(request_id, model.name, model.version, row, result)
        return Scored(runtime=runtime, prediction=result, cache_hit=hit)

    async def predict_rows(
        self,
        runtime: Runtime,
        rows: Sequence[Any],
        *,
        request_id: str | None,
        use_cache: bool = True,
    ) -> ScoredBatch:
        """Score prepared rows in one model call (the cache's misses only, when it is on);
        with feedback on, row i is remembered as `<request_id>-<i>`."""
        traffic = self.traffic
        rollouts = self._watching(runtime)
        started = time.perf_counter() if rollouts is not None else 0.0
        try:
            if use_cache:
                results, hits = await traffic.predict_many(runtime, rows)
            else:
                results, hits = await runtime.batcher.submit_many(rows), None
        except Exception as exc:
            if rollouts is not None:
                seconds = time.perf_counter() - started
                rollouts.observe(runtime, seconds, failed=_is_5xx(exc), n=len(rows))
            if isinstance(exc, ModelDegradedError) and traffic.splits:
                serving = traffic.instead_of(runtime)
                if serving is not None:  # a split's pick that degraded after it was picked
                    try:
                        again = [reprepare(runtime.model, serving.model, row) for row in rows]
                    except MlserveError:
                        raise exc from None  # the serving version takes other inputs
                    return await self.predict_rows(
                        serving, again, request_id=request_id, use_cache=use_cache
                    )
            raise
        if rollouts is not None:
            rollouts.observe(runtime, time.perf_counter() - started, failed=False, n=len(rows))
        self.count(runtime, results)
        if traffic.shadows:
            traffic.mirror(runtime, rows, results)
        feedback = self.feedback
        if feedback is not None and request_id is not None:
            model = runtime.model
            feedback.record_many(request_id, model.name, model.version, rows, results)
        return ScoredBatch(runtime=runtime, predictions=results, cache_hits=hits)

    def _watching(self, runtime: Runtime) -> RolloutController | None:
        """The rollout controller when runtime's model has a rollout running here, else None
        (one dict test on the request path while none runs)."""
        rollouts = self.rollouts
        if rollouts is None or not rollouts.watching or runtime.model.name not in rollouts.watching:
            return None
        return rollouts

    def count(self, runtime: Runtime, predictions: Sequence[Prediction]) -> None:
        """Count answers per model, version and predicted class."""
        count_predictions(self.metrics, runtime, predictions)


def _is_5xx(exc: BaseException) -> bool:
    """A failure of the version (5xx), not of the request (4xx)."""
    return not isinstance(exc, MlserveError) or exc.status_code >= 500


def count_predictions(
    metrics: ServerMetrics, runtime: Runtime, predictions: Sequence[Prediction]
) -> None:
    """Count answers per model, version and predicted class (every scoring path, jobs too).

    Only a model with a known class list gets a series per class: a regressor's predicted
    values are unbounded, and one series each would grow /metrics (and Prometheus) without
    end, so its answers are counted under an empty predicted_class."""
    runtime.predictions += len(predictions)
    model = runtime.model
    name, version = model.name, str(model.version)
    counter = metrics.predictions
    if not model.classes:
        counter.labels(name, version, "").inc(len(predictions))
        return
    if len(predictions) == 1:
        counter.labels(name, version, str(predictions[0].label)).inc()
        return
    # One series update per class rather than per row (a batch holds few distinct classes).
    for label, n in collections.Counter(str(p.label) for p in predictions).items():
        counter.labels(name, version, label).inc(n)
