"""Feedback stores: remembered predictions and their ground-truth labels, in SQLite (one host)
or Redis (replicas), the recorder the prediction paths append to, and the factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.feedback.base import (
    CONFIDENCE_BINS,
    TALLY_BUCKET_S,
    WINDOWS,
    Buffered,
    BufferedBatch,
    ClassTally,
    FeedbackDisabledError,
    FeedbackStore,
    FeedbackUnavailableError,
    InvalidLabelError,
    LabelOutcome,
    PredictionNotFoundError,
    StoredPrediction,
    Tally,
    VersionData,
    bucket_of,
    first_bucket,
    input_hash,
    label_key,
    match_label,
    merge_tallies,
    record_values,
    tally_records,
)
from mlserve.feedback.recorder import FeedbackRecorder

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings

__all__ = [
    "CONFIDENCE_BINS",
    "TALLY_BUCKET_S",
    "WINDOWS",
    "Buffered",
    "BufferedBatch",
    "ClassTally",
    "FeedbackDisabledError",
    "FeedbackRecorder",
    "FeedbackStore",
    "FeedbackUnavailableError",
    "InvalidLabelError",
    "LabelOutcome",
    "PredictionNotFoundError",
    "StoredPrediction",
    "Tally",
    "VersionData",
    "bucket_of",
    "first_bucket",
    "input_hash",
    "label_key",
    "match_label",
    "merge_tallies",
    "open_feedback_store",
    "record_values",
    "tally_records",
]


async def open_feedback_store(
    settings: Settings, *, redis: RedisBackend | None = None
) -> FeedbackStore:
    """In Redis, shared by every replica, when there is a Redis backend (redis.url); else
    SQLite in the state directory (one host)."""
    config = settings.feedback
    if redis is not None:
        from mlserve.feedback.redis import RedisFeedbackStore

        return RedisFeedbackStore(
            redis, retention_s=config.retention_s, max_records=config.max_records
        )
    from mlserve.feedback.sqlite import SqliteFeedbackStore

    return await SqliteFeedbackStore.open(
        settings.feedback_database,
        retention_s=config.retention_s,
        max_records=config.max_records,
    )
