"""The feedback store on one SQLite file, shared by the server processes of one host."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlserve.backends.sqlite import SqliteDatabase, in_thread, opened
from mlserve.feedback.base import (
    TALLY_BUCKET_S,
    Buffered,
    BufferedBatch,
    ClassTally,
    Entry,
    FeedbackUnavailableError,
    LabelOutcome,
    Record,
    StoredPrediction,
    Tally,
    VersionData,
    batch_row,
    first_bucket,
    input_digest,
    label_key,
    merge_tallies,
    record_values,
    tally_records,
)

__all__ = ["SqliteFeedbackStore"]

SCHEMA_VERSION = 2  # 2: the batches table (a file of schema 1 gains it when opened)
LOOKUP_CHUNK = 500  # ids per SQL statement (SQLite's host-parameter limit is far above)
PURGE_BATCH = 10_000  # expired rows deleted per flush at most (reads filter expiry anyway)

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
CREATE TABLE IF NOT EXISTS batches (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    vid         INTEGER NOT NULL,
    first       INTEGER NOT NULL,
    hashes      BLOB NOT NULL,
    predicted   TEXT NOT NULL,
    confidences BLOB NOT NULL,
    created_at  REAL NOT NULL
);
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

BATCH_LOOKUP = (
    "SELECT b.id, v.model, v.version, b.first, b.hashes, b.predicted, b.confidences, "
    "b.created_at FROM batches b JOIN versions v ON v.vid = b.vid "
    "WHERE b.id IN ({marks}) AND b.created_at >= ?"
)
DIGEST = 32  # bytes of one row's sha256 in batches.hashes (the SQL says 32 too)


def _batch_values(entry: BufferedBatch) -> tuple[bytes, list[str], bytes]:
    """A batch's row digests, predicted label keys and confidences (NaN: none), as stored."""
    sha256 = hashlib.sha256
    digests = [
        sha256(b"t\x00" + row.encode("utf-8", "surrogatepass")).digest()
        if type(row) is str
        else input_digest(row)
        for row in entry.rows
    ]
    keys = [label if type(label) is str else label_key(label) for label in entry.labels]
    confidences = [math.nan if c is None else c for c in entry.confidences]
    return b"".join(digests), keys, struct.pack(f"<{len(confidences)}d", *confidences)


@dataclass(frozen=True, slots=True)
class _StoredBatch:
    """One row of `batches`, read back."""

    model: str
    version: int
    first: int
    hashes: bytes
    predicted: str  # JSON list of label keys
    confidences: bytes
    created_at: float

    def row(self, request_id: str, index: int) -> StoredPrediction | None:
        """Row `index` of the batch as the prediction `request_id`, or None past its rows."""
        k = index - self.first
        if not 0 <= k < len(self.hashes) // DIGEST:
            return None
        (confidence,) = struct.unpack_from("<d", self.confidences, 8 * k)
        return StoredPrediction(
            id=request_id,
            model=self.model,
            version=self.version,
            input_hash=self.hashes[DIGEST * k : DIGEST * (k + 1)].hex(),
            predicted=json.loads(self.predicted)[k],
            confidence=None if confidence != confidence else confidence,  # NaN: none
            created_at=self.created_at,
        )


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + LOOKUP_CHUNK] for i in range(0, len(ids), LOOKUP_CHUNK)]


def _writer(store: SqliteFeedbackStore) -> Executor:
    return store._writer


def _readers(store: SqliteFeedbackStore) -> Executor:
    return store._readers


class SqliteFeedbackStore:
    """FeedbackStore on one SQLite file in WAL mode, shared by the server processes of a host.

    Cheap to write: a prediction is one row with one index (its id; server-made request ids
    are time-ordered, so that index is appended to), and a batch request's rows are one row of
    `batches` (their digests, predicted labels and confidences packed), found again by
    `<request id>-<row>`. A label for a batch row is stored as a row of `predictions` with the
    batch's values, so labelled predictions are all in one table. When an id names both a row
    of `predictions` and a batch row (a client reused an id), the newer prediction is the one
    found; a labelled copy of a batch row has the batch's time and wins the tie. What drift and
    the prediction counts need is kept per minute and version (`tallies`: counts by predicted
    class, confidence bins), not read back row by row; labelled rows have their own small
    index.

    `seq` numbers predictions in insertion order, over both tables (a batch's `seq` is its
    first row's): the max_records bound deletes every prediction more than max_records behind
    the newest, a batch as a whole once its first row is (so at most max_records are left),
    and the expiry purge walks from the oldest. Reads ignore expired rows whatever the purge
    has done, so expiry is exact (to the minute for the tallies). Writes go through one thread
    in order; reads have their own threads, and WAL lets them run beside a write.
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
        return await opened(store, store._writer)

    def initialize(self) -> None:
        self._db.create_schema(SCHEMA, SCHEMA_VERSION)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Wait for running calls, then close every connection this store opened."""
        self._db.shutdown(self._writer, self._readers)

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
    def _last_seq(self, db: sqlite3.Connection) -> int:
        """The newest prediction's `seq` over both tables (0 in an empty store)."""
        single = db.execute("SELECT MAX(seq) FROM predictions").fetchone()[0] or 0
        batch = db.execute(
            "SELECT seq + length(hashes) / 32 - 1 FROM batches ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return max(single, batch[0] if batch is not None else 0)

    def add_sync(self, batch: Sequence[Entry]) -> None:
        singles: list[Buffered] = []
        batches: list[tuple[BufferedBatch, bytes, list[str], bytes]] = []
        for entry in batch:
            if isinstance(entry, BufferedBatch):
                if len(entry):
                    batches.append((entry, *_batch_values(entry)))
            else:
                singles.append(entry)
        if not singles and not batches:
            return
        records = record_values(singles)  # hashing outside the write lock
        counted: list[Record] = list(records)
        for entry, _, keys, confidences in batches:
            values = struct.unpack(f"<{len(keys)}d", confidences)
            counted.extend(
                ("", entry.model, entry.version, "", key, value, entry.created_at)
                for key, value in zip(keys, values, strict=True)
            )
        tallies = tally_records(counted)
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
            seq = self._last_seq(db)
            # An id seen before (a client reusing its X-Request-ID) now names the new prediction.
            db.executemany(
                "INSERT OR REPLACE INTO predictions "
                "(seq, id, vid, input_hash, predicted, confidence, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (seq + i, r[0], vids[(r[1], r[2])], r[3], r[4], r[5], r[6])
                    for i, r in enumerate(records, start=1)
                ],
            )
            seq += len(records)
            rows = []
            for entry, hashes, keys, confidences in batches:
                rows.append(
                    (
                        seq + 1,
                        entry.request_id,
                        vids[(entry.model, entry.version)],
                        entry.first,
                        hashes,
                        json.dumps(keys, separators=(",", ":")),
                        confidences,
                        entry.created_at,
                    )
                )
                seq += len(keys)
            db.executemany(
                "INSERT OR REPLACE INTO batches "
                "(seq, id, vid, first, hashes, predicted, confidences, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for entry, _, keys, _ in batches:
                self._forget_rows(db, entry, len(keys))
            for (model, version, bucket), tally in tallies.items():
                self._add_tally(db, vids[(model, version)], bucket, tally)
            bound = seq - self.max_records
            db.execute("DELETE FROM predictions WHERE seq <= ?", (bound,))
            db.execute("DELETE FROM batches WHERE seq <= ?", (bound,))
            self._purge(db)

    def _forget_rows(self, db: sqlite3.Connection, entry: BufferedBatch, n: int) -> None:
        """Delete the rows of `predictions` older than the batch that its row ids name (a
        label on an earlier batch of the same request id, or a prediction that used one of
        its ids): the id now names the batch's row. One probe of the id index (the range of
        ids starting with `<request id>-`), which finds nothing for ids used once."""
        rid = entry.request_id
        stale = [
            (found,)
            for (found,) in db.execute(
                "SELECT id FROM predictions WHERE id > ? AND id < ? AND created_at <= ?",
                (rid + "-", rid + ".", entry.created_at),  # "." follows "-"
            )
            if (row := batch_row(found)) is not None
            and row[0] == rid
            and entry.first <= row[1] < entry.first + n
        ]
        if stale:
            db.executemany("DELETE FROM predictions WHERE id = ?", stale)

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
        """Delete expired rows of both tables, oldest first (a bounded amount per call), and
        tallies no window can count any more (at most once a bucket); returns the rows."""
        cutoff = self._cutoff()
        if cutoff - self._tallies_purged >= TALLY_BUCKET_S:
            db.execute("DELETE FROM tallies WHERE bucket < ?", (cutoff,))
            self._tallies_purged = cutoff
        deleted = 0
        for table in ("predictions", "batches"):  # names from this tuple only
            oldest = db.execute(f"SELECT created_at FROM {table} ORDER BY seq LIMIT 1").fetchone()  # noqa: S608
            if oldest is None or oldest[0] >= cutoff:
                continue
            deleted += db.execute(
                f"DELETE FROM {table} WHERE seq IN "  # noqa: S608
                f"(SELECT seq FROM {table} ORDER BY seq LIMIT ?) AND created_at < ?",
                (PURGE_BATCH, cutoff),
            ).rowcount
        return deleted

    def purge_sync(self) -> int:
        with self._db.transaction() as db:
            return self._purge(db)

    def lookup_sync(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        cutoff = self._cutoff()
        out: dict[str, StoredPrediction] = {}
        unique = list(dict.fromkeys(ids))
        rows = {i: r for i in unique if (r := batch_row(i)) is not None}
        with self._db.snapshot() as db:
            for chunk in _chunks(unique):
                query = LOOKUP.format(marks=",".join("?" * len(chunk)))  # only "?" inserted
                for row in db.execute(query, (*chunk, cutoff)):
                    out[row[0]] = StoredPrediction(*row)
            batches = self._batches(db, list(dict.fromkeys(b for b, _ in rows.values())), cutoff)
        for request_id, (base, index) in rows.items():
            stored = batches.get(base)
            found = out.get(request_id)
            if stored is None or (found is not None and found.created_at >= stored.created_at):
                continue  # none, or the row of `predictions` is the newer (or labelled) one
            prediction = stored.row(request_id, index)
            if prediction is not None:
                out[request_id] = prediction
        return out

    def _batches(
        self, db: sqlite3.Connection, ids: Sequence[str], cutoff: float
    ) -> dict[str, _StoredBatch]:
        """The unexpired batches among `ids`, by id."""
        out: dict[str, _StoredBatch] = {}
        for chunk in _chunks(ids):
            query = BATCH_LOOKUP.format(marks=",".join("?" * len(chunk)))  # only "?" inserted
            for request_id, *values in db.execute(query, (*chunk, cutoff)):
                out[request_id] = _StoredBatch(*values)
        return out

    def set_labels_sync(self, items: Sequence[tuple[str, str]]) -> list[LabelOutcome]:
        cutoff = self._cutoff()
        now = self.clock()
        outcomes: list[LabelOutcome] = []
        seq: int | None = None
        with self._db.transaction() as db:
            for request_id, label in items:
                row = db.execute(
                    "SELECT label, created_at FROM predictions WHERE id = ? AND created_at >= ?",
                    (request_id, cutoff),
                ).fetchone()
                found = batch_row(request_id)
                stored = None
                if found is not None:
                    batch = self._batches(db, [found[0]], cutoff).get(found[0])
                    if batch is not None and (row is None or batch.created_at > row[1]):
                        stored = batch.row(request_id, found[1])
                if stored is not None:  # a batch row's first label: kept as a row of its own
                    seq = (self._last_seq(db) if seq is None else seq) + 1
                    db.execute(
                        "INSERT OR REPLACE INTO predictions (seq, id, vid, input_hash, predicted, "
                        "confidence, created_at, label, labelled_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            seq,
                            request_id,
                            self._vid(db, stored.model, stored.version),
                            stored.input_hash,
                            stored.predicted,
                            stored.confidence,
                            stored.created_at,
                            label,
                            now,
                        ),
                    )
                    outcomes.append("accepted")
                    continue
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
        count: int = (
            self._db.connection()
            .execute(
                "SELECT (SELECT COUNT(*) FROM predictions) + "
                "(SELECT COALESCE(SUM(length(hashes)), 0) / 32 FROM batches)"
            )
            .fetchone()[0]
        )
        return count

    # ------------------------------------------------------------------ FeedbackStore (async)
    # Writes go through the one writer thread, in order; a lookup and labels too, so they see
    # every flush queued before them. Reports read on the reader threads, beside a write.
    add = in_thread(add_sync, pool=_writer)
    lookup = in_thread(lookup_sync, pool=_writer)
    set_labels = in_thread(set_labels_sync, pool=_writer)
    versions = in_thread(versions_sync, pool=_readers)
    keys = in_thread(keys_sync, pool=_readers)
    version_data = in_thread(version_data_sync, pool=_readers)
    count = in_thread(count_sync, pool=_readers)
