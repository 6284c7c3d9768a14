"""What every feedback store shares: the FeedbackStore protocol, the remembered prediction
and tally value objects, errors, and the hashing and counting both stores do alike.

A prediction is kept `feedback.retention_s` by its id (the request id; `<request id>-<row>` for
the rows of a batch or a V2 inference): model, version, a sha256 of the prepared input, the
predicted label, the confidence and the time. A true label sent later is stored on the same
record; a second label for the same id replaces the first (never counted twice).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlserve.errors import InvalidInputError, MlserveError, NotFoundError

if TYPE_CHECKING:
    from mlserve.runtime.model import Prediction

__all__ = [
    "CONFIDENCE_BINS",
    "TALLY_BUCKET_S",
    "WINDOWS",
    "Buffered",
    "BufferedBatch",
    "ClassTally",
    "Entry",
    "FeedbackDisabledError",
    "FeedbackStore",
    "FeedbackUnavailableError",
    "InvalidLabelError",
    "LabelOutcome",
    "PredictionNotFoundError",
    "Record",
    "StoredPrediction",
    "Tally",
    "VersionData",
    "batch_row",
    "bucket_of",
    "first_bucket",
    "input_digest",
    "input_hash",
    "label_key",
    "match_label",
    "merge_tallies",
    "record_values",
    "row_count",
    "tally_records",
]

TALLY_BUCKET_S = 60.0  # drift and prediction counts are kept per minute and version
CONFIDENCE_BINS = 100  # ... with confidences in bins of 0.01
# Time windows of the quality report (label → seconds), by when the prediction was made.
WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}

LabelOutcome = Literal["accepted", "replaced", "unknown"]
# What the prediction paths append: (id, model, version, prepared row, label, confidence, time).
Buffered = tuple[str, str, int, Any, Any, float | None, float]


@dataclass(frozen=True, slots=True)
class BufferedBatch:
    """The rows of one batch request, buffered as one entry (the request path does no work per
    row but taking each answer's label and confidence): row i is remembered as
    `<request_id>-<first + i>`; `first` is above 0 only for what is left of a batch cut at the
    buffer's bound."""

    request_id: str
    model: str
    version: int
    rows: Sequence[Any]
    labels: Sequence[Any]
    confidences: Sequence[float | None]
    created_at: float
    first: int = 0

    @classmethod
    def of(
        cls,
        request_id: str,
        model: str,
        version: int,
        rows: Sequence[Any],
        predictions: Sequence[Prediction],
        created_at: float,
    ) -> BufferedBatch:
        """The batch of `rows` and their answers (only labels and confidences are kept: not
        the answers' probability maps, while the buffer waits for a store that is down)."""
        return cls(
            request_id,
            model,
            version,
            rows,
            [p.label for p in predictions],
            [p.confidence for p in predictions],
            created_at,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def tail(self, skip: int) -> BufferedBatch:
        """The rows after the first `skip`, keeping their ids."""
        return BufferedBatch(
            self.request_id,
            self.model,
            self.version,
            self.rows[skip:],
            self.labels[skip:],
            self.confidences[skip:],
            self.created_at,
            self.first + skip,
        )

    def expand(self) -> list[Buffered]:
        """One Buffered per row."""
        rid, model, version, now, first = (
            self.request_id,
            self.model,
            self.version,
            self.created_at,
            self.first,
        )
        return [
            (f"{rid}-{first + i}", model, version, row, label, confidence, now)
            for i, (row, label, confidence) in enumerate(
                zip(self.rows, self.labels, self.confidences, strict=True)
            )
        ]


# One buffered prediction, or a batch request's rows.
Entry = Buffered | BufferedBatch


def row_count(entries: Sequence[Entry]) -> int:
    """Predictions held by `entries` (a batch counts its rows)."""
    return sum(1 if type(e) is tuple else len(e) for e in entries)


def batch_row(request_id: str) -> tuple[str, int] | None:
    """(batch request id, row) that `<request id>-<row>` names, or None for an id of another
    form (the row written as the recorder writes it: no sign, no leading zero)."""
    base, dash, index = request_id.rpartition("-")
    if not dash or not base or not (index.isascii() and index.isdigit()):
        return None
    if index != "0" and index[0] == "0":
        return None
    return base, int(index)


class FeedbackUnavailableError(MlserveError):
    """The feedback store cannot be reached (could not be opened, or Redis is down)."""

    code = "feedback_unavailable"
    status_code = 503


class PredictionNotFoundError(NotFoundError):
    """No prediction with this id is kept (never made here, or past feedback.retention_s)."""

    code = "prediction_not_found"


class InvalidLabelError(InvalidInputError):
    """A label that is not one of the model's classes (or feedback for a regression model)."""

    code = "invalid_label"


class FeedbackDisabledError(MlserveError):
    """feedback.enabled is false: predictions are not remembered."""

    code = "feedback_disabled"
    status_code = 404


# ---------------------------------------------------------------------------- values
def input_hash(row: Any) -> str:
    """sha256 of a prepared input: the exact text (UTF-8), or the feature values as IEEE
    doubles in the model's order (1 and 1.0 hash alike; every missing value as one NaN)."""
    return input_digest(row).hex()


def input_digest(row: Any) -> bytes:
    """input_hash as 32 bytes."""
    if type(row) is str:
        data = b"t\x00" + row.encode("utf-8", "surrogatepass")
    elif all(type(v) is float or type(v) is int for v in row):
        values = [math.nan if math.isnan(v) else float(v) + 0.0 for v in row]
        data = b"f\x00" + struct.pack(f"<{len(values)}d", *values)
    else:  # a typed row (DataFrame models): its JSON, each value's type being its column's
        data = b"j\x00" + json.dumps(list(row), separators=(",", ":")).encode()
    return hashlib.sha256(data).digest()


def label_key(label: Any) -> str:
    """How labels are compared and stored: str() of the class (as probabilities are keyed)."""
    return str(label)


def match_label(label: Any, classes: Sequence[Any]) -> str | None:
    """The class key `label` names, or None: a class itself or its text ("1" for class 1,
    as a CSV file sends it); an integral float names an integer class (1.0 → 1)."""
    keys = {label_key(c) for c in classes}
    if isinstance(label, bool) or not isinstance(label, str | int | float):
        return label_key(label) if isinstance(label, bool) and label_key(label) in keys else None
    candidates = [label_key(label)]
    if isinstance(label, float) and math.isfinite(label) and label.is_integer():
        candidates.append(label_key(int(label)))
    return next((c for c in candidates if c in keys), None)


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """One remembered prediction; `label` is the true label once feedback arrived."""

    id: str
    model: str
    version: int
    input_hash: str
    predicted: str
    confidence: float | None
    created_at: float
    label: str | None = None
    labelled_at: float | None = None


@dataclass(slots=True)
class ClassTally:
    """Predictions of one class: how many, and their confidences (a sum and CONFIDENCE_BINS
    bins of equal width over [0, 1]; the last bin includes 1.0)."""

    n: int = 0
    confidence_n: int = 0
    confidence_sum: float = 0.0
    bins: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)

    def add(self, confidence: float | None, n: int = 1) -> None:
        self.n += n
        if confidence is not None and math.isfinite(confidence):
            self.confidence_n += n
            self.confidence_sum += confidence * n
            self.bins[min(max(int(confidence * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)] += n

    def merge(self, other: ClassTally) -> None:
        self.n += other.n
        self.confidence_n += other.confidence_n
        self.confidence_sum += other.confidence_sum
        self.bins = [a + b for a, b in zip(self.bins, other.bins, strict=True)]

    def packed_bins(self) -> bytes:
        return struct.pack(f"<{CONFIDENCE_BINS}I", *self.bins)

    @classmethod
    def unpack(cls, n: int, confidence_n: int, confidence_sum: float, bins: bytes) -> ClassTally:
        return cls(
            n, confidence_n, confidence_sum, list(struct.unpack(f"<{CONFIDENCE_BINS}I", bins))
        )


# Predictions of one version by predicted class (label key).
Tally = dict[str, ClassTally]


def merge_tallies(into: Tally, other: Mapping[str, ClassTally]) -> Tally:
    for label, counts in other.items():
        into.setdefault(label, ClassTally()).merge(counts)
    return into


def bucket_of(created_at: float) -> float:
    """Start of the tally bucket (TALLY_BUCKET_S wide) a prediction falls in."""
    return math.floor(created_at / TALLY_BUCKET_S) * TALLY_BUCKET_S


def first_bucket(since: float) -> float:
    """The first bucket a window starting at `since` counts: a bucket counts while its start
    is inside the window."""
    return math.ceil(since / TALLY_BUCKET_S) * TALLY_BUCKET_S


@dataclass(frozen=True, slots=True)
class VersionData:
    """What the quality report of one version is computed from (all within retention)."""

    predictions: int  # predictions made (per-minute tallies)
    labelled: int  # remembered predictions that have a true label
    rolling: list[tuple[str, str]]  # (true, predicted) of the latest labelled ones, newest first
    windows: dict[str, dict[tuple[str, str], int]]  # window → (true, predicted) → count
    recent: Tally  # predictions of the drift window, by predicted class


Record = tuple[str, str, int, str, str, float | None, float]


def record_values(entries: Sequence[Entry]) -> list[Record]:
    """(id, model, version, input hash, predicted label key, confidence, time) of buffered
    predictions, a batch's rows one by one (input_hash and label_key inlined for texts and
    text labels: this runs for every prediction served)."""
    sha256 = hashlib.sha256
    out: list[Record] = []
    append = out.append
    batch: list[Buffered] = []
    for entry in entries:
        if type(entry) is tuple:
            batch.append(entry)
        else:
            batch.extend(entry.expand())  # type: ignore[union-attr]
    for request_id, model, version, row, label, confidence, created_at in batch:
        if type(row) is str:
            digest = sha256(b"t\x00" + row.encode("utf-8", "surrogatepass")).hexdigest()
        else:
            digest = input_hash(row)
        key = label if type(label) is str else label_key(label)
        append((request_id, model, version, digest, key, confidence, created_at))
    return out


def tally_records(records: Sequence[Record]) -> dict[tuple[str, int, float], Tally]:
    """(model, version, bucket) → predictions by class, for a batch of records."""
    # Count (model, version, bucket, class, confidence bin) first: one dict update per row.
    counted: dict[tuple[str, int, float, str, int], list[float]] = {}
    last_bucket, bucket_end, bucket = -math.inf, -math.inf, 0.0
    top = CONFIDENCE_BINS - 1
    for _, model, version, _, predicted, confidence, created_at in records:
        if not last_bucket <= created_at < bucket_end:
            bucket = bucket_of(created_at)
            last_bucket, bucket_end = bucket, bucket + TALLY_BUCKET_S
        if confidence is None or confidence != confidence:  # NaN
            b = -1
            value = 0.0
        else:
            b = int(confidence * CONFIDENCE_BINS)
            b = top if b > top else 0 if b < 0 else b
            value = confidence
        slot = counted.get((model, version, bucket, predicted, b))
        if slot is None:
            counted[(model, version, bucket, predicted, b)] = [1, value]
        else:
            slot[0] += 1
            slot[1] += value
    out: dict[tuple[str, int, float], Tally] = {}
    for (model, version, bucket, predicted, b), (n, total) in counted.items():
        tally = out.setdefault((model, version, bucket), {})
        counts = tally.get(predicted)
        if counts is None:
            counts = tally[predicted] = ClassTally()
        counts.n += int(n)
        if b >= 0:
            counts.confidence_n += int(n)
            counts.confidence_sum += total
            counts.bins[b] += int(n)
    return out


# ---------------------------------------------------------------------------- the interface
class FeedbackStore(Protocol):
    """Where predictions and their labels live. Every method is a coroutine (the SQLite store
    runs its blocking calls on its own threads; the Redis one uses the asyncio client)."""

    retention_s: float
    max_records: int

    async def add(self, batch: Sequence[Entry]) -> None:
        """Write buffered predictions (a batch's rows as `<request id>-<row>`); an id seen
        before now names the new prediction."""
        ...

    async def lookup(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        """The unexpired predictions among `ids`."""
        ...

    async def set_labels(self, items: Sequence[tuple[str, str]]) -> list[LabelOutcome]:
        """Store (id, label key) pairs: accepted (first label), replaced, or unknown (gone)."""
        ...

    async def versions(self, model: str) -> list[int]:
        """Versions of `model` with predictions within the retention."""
        ...

    async def keys(self) -> list[tuple[str, int]]:
        """Every (model, version) with predictions within the retention."""
        ...

    async def version_data(
        self,
        model: str,
        version: int,
        *,
        rolling: int,
        windows: Mapping[str, float] | None,
        drift_window_s: float,
    ) -> VersionData:
        """Counts, the latest `rolling` labelled pairs, confusion counts per time window (not
        computed when None) and the tallies of the last `drift_window_s`."""
        ...

    async def count(self) -> int:
        """Predictions remembered (expired ones not yet purged included; in SQLite a labelled
        row of a batch counts twice, as its label is a row of its own)."""
        ...

    async def close(self) -> None: ...
