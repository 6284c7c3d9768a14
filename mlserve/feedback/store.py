"""Predictions remembered for feedback: the store (SQLite on one host; Redis with redis.url) and
the bounded in-memory buffer the prediction paths append to.

A prediction is kept `feedback.retention_s` by its id (the request id; `<request id>-<row>` for
the rows of a batch or a V2 inference): model, version, a sha256 of the prepared input, the
predicted label, the confidence and the time. A true label sent later is stored on the same
record; a second label for the same id replaces the first (never counted twice).

Prediction paths never wait for the store: they append to a list, and a background task writes
what accumulated every `flush_interval_s` in one transaction (in a worker thread for SQLite).
The buffer is bounded (`buffer_size`): beyond it predictions are dropped and counted, never
queued without limit. A feedback request first flushes the buffer, so it sees predictions
this process answered a moment ago; another process's are visible after its next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import sqlite3
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar

from mlserve.backends.sqlite import SqliteDatabase
from mlserve.errors import InvalidInputError, MlserveError, NotFoundError

if TYPE_CHECKING:
    from mlserve.backends.redis import RedisBackend
    from mlserve.config import Settings
    from mlserve.runtime.model import Prediction

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOOKUP_CHUNK = 500  # ids per SQL statement (SQLite's host-parameter limit is far above)
PURGE_BATCH = 10_000  # expired rows deleted per flush at most (reads filter expiry anyway)
TALLY_BUCKET_S = 60.0  # drift and prediction counts are kept per minute and version
CONFIDENCE_BINS = 100  # ... with confidences in bins of 0.01
# Time windows of the quality report (label → seconds), by when the prediction was made.
WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}

P = ParamSpec("P")
R = TypeVar("R")

LabelOutcome = Literal["accepted", "replaced", "unknown"]
# What the prediction paths append: (id, model, version, prepared row, label, confidence, time).
Buffered = tuple[str, str, int, Any, Any, float | None, float]


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
    if type(row) is str:
        data = b"t\x00" + row.encode("utf-8", "surrogatepass")
    else:
        values = [math.nan if math.isnan(v) else float(v) + 0.0 for v in row]
        data = b"f\x00" + struct.pack(f"<{len(values)}d", *values)
    return hashlib.sha256(data).hexdigest()


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


def record_values(batch: Sequence[Buffered]) -> list[Record]:
    """(id, model, version, input hash, predicted label key, confidence, time) of buffered
    predictions (input_hash and label_key inlined for texts and text labels: this runs for
    every prediction served)."""
    sha256 = hashlib.sha256
    out: list[Record] = []
    append = out.append
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

    async def add(self, batch: Sequence[Buffered]) -> None:
        """Write buffered predictions; an id seen before now names the new prediction."""
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
        """Predictions remembered (expired ones not yet purged included)."""
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------- SQLite
SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    vid       INTEGER PRIMARY KEY,
    model     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (model, version)
);
CREATE TABLE IF NOT EXISTS predictions (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    vid         INTEGER NOT NULL,
    input_hash  TEXT NOT NULL,
    predicted   TEXT NOT NULL,
    confidence  REAL,
    created_at  REAL NOT NULL,
    label       TEXT,
    labelled_at REAL
);
CREATE INDEX IF NOT EXISTS predictions_labelled ON predictions (vid, created_at)
    WHERE label IS NOT NULL;
CREATE TABLE IF NOT EXISTS tallies (
    vid            INTEGER NOT NULL,
    bucket         REAL NOT NULL,
    predicted      TEXT NOT NULL,
    n              INTEGER NOT NULL,
    confidence_n   INTEGER NOT NULL,
    confidence_sum REAL NOT NULL,
    bins           BLOB NOT NULL,
    PRIMARY KEY (vid, bucket, predicted)
) WITHOUT ROWID;
"""

LOOKUP = (
    "SELECT p.id, v.model, v.version, p.input_hash, p.predicted, p.confidence, p.created_at, "
    "p.label, p.labelled_at FROM predictions p JOIN versions v ON v.vid = p.vid "
    "WHERE p.id IN ({marks}) AND p.created_at >= ?"
)


class SqliteFeedbackStore:
    """FeedbackStore on one SQLite file in WAL mode, shared by the server processes of a host.

    Cheap to write: a prediction is one row with one index (its id; server-made request ids
    are time-ordered, so that index is appended to). What drift and the prediction counts
    need is kept per minute and version (`tallies`: counts by predicted class, confidence
    bins), not read back row by row; labelled rows have their own small index.

    `seq` numbers rows in insertion order: the max_records bound deletes every row more than
    max_records behind the newest (exact: seq values are unique, so at most max_records are
    left), and the expiry purge walks from the oldest. Reads ignore expired rows whatever the
    purge has done, so expiry is exact (to the minute for the tallies). Writes go through one
    thread in order; reads have their own threads, and WAL lets them run beside a write.
    synchronous=NORMAL: a power cut may lose the last flushes (never corrupt the file); a
    killed process loses only what its buffer held."""

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = 7 * 86400.0,
        max_records: int = 1_000_000,
        busy_timeout_s: float = 10.0,
        readers: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.max_records = max_records
        self.clock = clock
        # 8 KiB pages (set on a new file, before WAL) cut the write cost by ~15%.
        self._db = SqliteDatabase(
            self.path,
            what="feedback store",
            busy_timeout_s=busy_timeout_s,
            synchronous="NORMAL",
            closed_error=lambda: FeedbackUnavailableError("the feedback store is closed"),
            page_size=8192,
        )
        self._vids: dict[tuple[str, int], int] = {}
        self._tallies_purged = -math.inf
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-write")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="feedback-read")

    # ------------------------------------------------------------------ plumbing
    @classmethod
    async def open(cls, path: Path, **kwargs: Any) -> SqliteFeedbackStore:
        """Create the folder and the schema if needed (off the event loop)."""
        store = cls(path, **kwargs)
        try:
            await store._write(store.initialize)
        except BaseException:
            await store.close()
            raise
        return store

    def initialize(self) -> None:
        self._db.create_schema(SCHEMA, SCHEMA_VERSION)

    async def _write(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(fn, *args, **kwargs))

    async def _read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Wait for running calls, then close every connection this store opened."""
        self._db.stop_connecting()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._db.close()

    def _cutoff(self) -> float:
        return self.clock() - self.retention_s

    def _vid(self, db: sqlite3.Connection, model: str, version: int) -> int | None:
        """The row id of (model, version) in `versions`, or None if it has none yet."""
        key = (model, version)
        vid = self._vids.get(key)
        if vid is None:
            row = db.execute(
                "SELECT vid FROM versions WHERE model = ? AND version = ?", key
            ).fetchone()
            if row is None:
                return None
            vid = self._vids[key] = row[0]  # never deleted, never renumbered
        return vid

    # ------------------------------------------------------------------ blocking implementation
    def add_sync(self, batch: Sequence[Buffered]) -> None:
        if not batch:
            return
        records = record_values(batch)  # hashing outside the write lock
        tallies = tally_records(records)
        latest: dict[tuple[str, int], float] = {}
        for model, version, bucket in tallies:
            latest[(model, version)] = max(latest.get((model, version), bucket), bucket)
        with self._db.transaction() as db:
            vids: dict[tuple[str, int], int] = {}
            for key in latest:
                vid = self._vid(db, *key)
                if vid is None:
                    db.execute(
                        "INSERT INTO versions (model, version, last_seen) VALUES (?, ?, 0)", key
                    )
                    vid = self._vid(db, *key)
                assert vid is not None  # noqa: S101 - inserted just above
                vids[key] = vid
            db.executemany(  # the start of the version's newest tally bucket
                "UPDATE versions SET last_seen = MAX(last_seen, ?) WHERE vid = ?",
                [(latest[key], vid) for key, vid in vids.items()],
            )
            # An id seen before (a client reusing its X-Request-ID) now names the new prediction.
            db.executemany(
                "INSERT OR REPLACE INTO predictions "
                "(id, vid, input_hash, predicted, confidence, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r[0], vids[(r[1], r[2])], r[3], r[4], r[5], r[6]) for r in records],
            )
            for (model, version, bucket), tally in tallies.items():
                self._add_tally(db, vids[(model, version)], bucket, tally)
            db.execute(
                "DELETE FROM predictions WHERE seq <= (SELECT MAX(seq) FROM predictions) - ?",
                (self.max_records,),
            )
            self._purge(db)

    def _add_tally(self, db: sqlite3.Connection, vid: int, bucket: float, tally: Tally) -> None:
        for predicted, counts in tally.items():
            row = db.execute(
                "SELECT n, confidence_n, confidence_sum, bins FROM tallies "
                "WHERE vid = ? AND bucket = ? AND predicted = ?",
                (vid, bucket, predicted),
            ).fetchone()
            if row is not None:
                counts = ClassTally.unpack(*row)
                counts.merge(tally[predicted])
            db.execute(
                "INSERT OR REPLACE INTO tallies "
                "(vid, bucket, predicted, n, confidence_n, confidence_sum, bins) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    vid,
                    bucket,
                    predicted,
                    counts.n,
                    counts.confidence_n,
                    counts.confidence_sum,
                    counts.packed_bins(),
                ),
            )

    def _purge(self, db: sqlite3.Connection) -> int:
        """Delete expired rows, oldest first (a bounded amount per call), and tallies no
        window can count any more (at most once a bucket)."""
        cutoff = self._cutoff()
        if cutoff - self._tallies_purged >= TALLY_BUCKET_S:
            db.execute("DELETE FROM tallies WHERE bucket < ?", (cutoff,))
            self._tallies_purged = cutoff
        oldest = db.execute("SELECT created_at FROM predictions ORDER BY seq LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return 0
        return db.execute(
            "DELETE FROM predictions WHERE seq IN "
            "(SELECT seq FROM predictions ORDER BY seq LIMIT ?) AND created_at < ?",
            (PURGE_BATCH, cutoff),
        ).rowcount

    def purge_sync(self) -> int:
        with self._db.transaction() as db:
            return self._purge(db)

    def lookup_sync(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        cutoff = self._cutoff()
        out: dict[str, StoredPrediction] = {}
        unique = list(dict.fromkeys(ids))
        with self._db.snapshot() as db:
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = LOOKUP.format(marks=marks)  # only "?" placeholders are inserted
                rows = db.execute(query, (*chunk, cutoff)).fetchall()
                for row in rows:
                    out[row[0]] = StoredPrediction(*row)
        return out

    def set_labels_sync(self, items: Sequence[tuple[str, str]]) -> list[LabelOutcome]:
        cutoff = self._cutoff()
        now = self.clock()
        outcomes: list[LabelOutcome] = []
        with self._db.transaction() as db:
            for request_id, label in items:
                row = db.execute(
                    "SELECT label FROM predictions WHERE id = ? AND created_at >= ?",
                    (request_id, cutoff),
                ).fetchone()
                if row is None:
                    outcomes.append("unknown")
                    continue
                db.execute(
                    "UPDATE predictions SET label = ?, labelled_at = ? WHERE id = ?",
                    (label, now, request_id),
                )
                outcomes.append("accepted" if row[0] is None else "replaced")
        return outcomes

    def versions_sync(self, model: str) -> list[int]:
        rows = (
            self._db.connection()
            .execute(
                "SELECT version FROM versions WHERE model = ? AND last_seen >= ? ORDER BY version",
                (model, first_bucket(self._cutoff())),
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def keys_sync(self) -> list[tuple[str, int]]:
        rows = (
            self._db.connection()
            .execute(
                "SELECT model, version FROM versions WHERE last_seen >= ? ORDER BY model, version",
                (first_bucket(self._cutoff()),),
            )
            .fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    def version_data_sync(
        self,
        model: str,
        version: int,
        *,
        rolling: int,
        windows: Mapping[str, float] | None,
        drift_window_s: float,
    ) -> VersionData:
        now = self.clock()
        cutoff = now - self.retention_s
        with self._db.snapshot() as db:
            vid = self._vid(db, model, version)
            if vid is None:
                empty: dict[str, dict[tuple[str, str], int]] = {name: {} for name in windows or {}}
                return VersionData(0, 0, [], empty, {})
            predictions = db.execute(
                "SELECT COALESCE(SUM(n), 0) FROM tallies WHERE vid = ? AND bucket >= ?",
                (vid, first_bucket(cutoff)),
            ).fetchone()[0]
            labelled = db.execute(
                "SELECT COUNT(*) FROM predictions "
                "WHERE vid = ? AND created_at >= ? AND label IS NOT NULL",
                (vid, cutoff),
            ).fetchone()[0]
            pairs = db.execute(
                "SELECT label, predicted FROM predictions "
                "WHERE vid = ? AND created_at >= ? AND label IS NOT NULL "
                "ORDER BY created_at DESC LIMIT ?",
                (vid, cutoff, rolling),
            ).fetchall()
            counted: dict[str, dict[tuple[str, str], int]] = {}
            for name, seconds in (windows or {}).items():
                rows = db.execute(
                    "SELECT label, predicted, COUNT(*) FROM predictions "
                    "WHERE vid = ? AND created_at >= ? AND label IS NOT NULL "
                    "GROUP BY label, predicted",
                    (vid, max(cutoff, now - seconds)),
                ).fetchall()
                counted[name] = {(t, p): n for t, p, n in rows}
            recent: Tally = {}
            for predicted, *counts in db.execute(
                "SELECT predicted, n, confidence_n, confidence_sum, bins FROM tallies "
                "WHERE vid = ? AND bucket >= ?",
                (vid, first_bucket(max(cutoff, now - drift_window_s))),
            ):
                merge_tallies(recent, {predicted: ClassTally.unpack(*counts)})
        return VersionData(
            predictions=predictions,
            labelled=labelled,
            rolling=[(t, p) for t, p in pairs],
            windows=counted,
            recent=recent,
        )

    def count_sync(self) -> int:
        count: int = self._db.connection().execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        return count

    # ------------------------------------------------------------------ FeedbackStore (async)
    async def add(self, batch: Sequence[Buffered]) -> None:
        await self._write(self.add_sync, batch)

    async def lookup(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        # Through the writer: a lookup sees every flush queued before it.
        return await self._write(self.lookup_sync, ids)

    async def set_labels(self, items: Sequence[tuple[str, str]]) -> list[LabelOutcome]:
        return await self._write(self.set_labels_sync, items)

    async def versions(self, model: str) -> list[int]:
        return await self._read(self.versions_sync, model)

    async def keys(self) -> list[tuple[str, int]]:
        return await self._read(self.keys_sync)

    async def version_data(
        self,
        model: str,
        version: int,
        *,
        rolling: int,
        windows: Mapping[str, float] | None,
        drift_window_s: float,
    ) -> VersionData:
        return await self._read(
            functools.partial(
                self.version_data_sync,
                model,
                version,
                rolling=rolling,
                windows=windows,
                drift_window_s=drift_window_s,
            )
        )

    async def count(self) -> int:
        return await self._read(self.count_sync)


# ---------------------------------------------------------------------------- the buffer
class FeedbackRecorder:
    """The prediction paths' side: `record` appends to a bounded list (no I/O, no hashing);
    a background task hands what accumulated to the store every `flush_interval_s`.

    Bounded: with `buffer_size` predictions waiting, more are dropped and `on_drop(n)` is
    told. A flush that fails (store down) puts its batch back, within the bound, and is
    retried at the next interval."""

    def __init__(
        self,
        *,
        buffer_size: int = 100_000,
        flush_interval_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.on_drop = on_drop
        self.store: FeedbackStore | None = None  # attached once opened (in the lifespan)
        self.dropped = 0
        self._buffer: list[Buffered] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def __len__(self) -> int:
        return len(self._buffer)

    # ------------------------------------------------------------------ request path
    def record(
        self, request_id: str, model: str, version: int, row: Any, prediction: Prediction
    ) -> None:
        """Remember one answered prediction (never blocks, never raises)."""
        buffer = self._buffer
        if len(buffer) >= self.buffer_size:
            self._drop(1)
            return
        buffer.append(
            (
                request_id,
                model,
                version,
                row,
                prediction.label,
                prediction.confidence,
                self.clock(),
            )
        )

    def record_many(
        self,
        request_id: str,
        model: str,
        version: int,
        rows: Sequence[Any],
        predictions: Sequence[Prediction],
    ) -> None:
        """Remember the rows of a batch as `<request_id>-<index>`."""
        buffer = self._buffer
        room = self.buffer_size - len(buffer)
        if room < len(rows):
            self._drop(len(rows) - max(room, 0))
        now = self.clock()
        for i, (row, prediction) in enumerate(zip(rows[: max(room, 0)], predictions, strict=False)):
            buffer.append(
                (
                    f"{request_id}-{i}",
                    model,
                    version,
                    row,
                    prediction.label,
                    prediction.confidence,
                    now,
                )
            )

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    # ------------------------------------------------------------------ flushing
    async def flush(self) -> int:
        """Write what is buffered now (and wait for a flush in progress); returns how many."""
        async with self._lock:
            store = self.store
            if store is None or not self._buffer:
                return 0
            batch, self._buffer = self._buffer, []
            try:
                await store.add(batch)
            except (FeedbackUnavailableError, OSError, sqlite3.OperationalError) as exc:
                # The store is down, locked or out of space: keep the batch for the next try.
                self._requeue(batch)
                if not self._failing:
                    self._failing = True
                    log.error(
                        "cannot write predictions to the feedback store (kept and retried; "
                        "beyond feedback.buffer_size they are dropped): %s",
                        exc,
                    )
                raise
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except Exception:
                # Not the store's state but these records (a bug): retrying would fail forever.
                self._drop(len(batch))
                log.exception("dropped %d predictions the feedback store refused", len(batch))
                raise
            if self._failing:
                self._failing = False
                log.info("feedback store writes work again")
            return len(batch)

    def _requeue(self, batch: list[Buffered]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within the bound (the
        newest predictions are the ones kept)."""
        merged = batch + self._buffer
        excess = len(merged) - self.buffer_size
        if excess > 0:
            self._drop(excess)
            merged = merged[excess:]
        self._buffer = merged

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="feedback-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)  # the flush interval is a timer
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - flush() logged it (once per outage)
                log.debug("feedback flush failed, retried at the next interval: %s", exc)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the background task and write what is left (bounded by `timeout`)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._buffer and self.store is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except Exception as exc:  # noqa: BLE001 - shutting down: log, do not fail it
                log.warning(
                    "%d predictions not written to the feedback store: %s", len(self._buffer), exc
                )


# ---------------------------------------------------------------------------- factory
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
    return await SqliteFeedbackStore.open(
        settings.feedback_database,
        retention_s=config.retention_s,
        max_records=config.max_records,
    )
