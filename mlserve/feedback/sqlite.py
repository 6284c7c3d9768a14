"""The feedback store on one SQLite file, shared by the server processes of one host."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlserve.backends.sqlite import SqliteDatabase, in_thread, opened
from mlserve.feedback.base import (
    TALLY_BUCKET_S,
    Buffered,
    ClassTally,
    FeedbackUnavailableError,
    LabelOutcome,
    StoredPrediction,
    Tally,
    VersionData,
    first_bucket,
    merge_tallies,
    record_values,
    tally_records,
)

__all__ = ["SqliteFeedbackStore"]

SCHEMA_VERSION = 1
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


def _writer(store: SqliteFeedbackStore) -> Executor:
    return store._writer


def _readers(store: SqliteFeedbackStore) -> Executor:
    return store._readers


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
    # Writes go through the one writer thread, in order; a lookup and labels too, so they see
    # every flush queued before them. Reports read on the reader threads, beside a write.
    add = in_thread(add_sync, pool=_writer)
    lookup = in_thread(lookup_sync, pool=_writer)
    set_labels = in_thread(set_labels_sync, pool=_writer)
    versions = in_thread(versions_sync, pool=_readers)
    keys = in_thread(keys_sync, pool=_readers)
    version_data = in_thread(version_data_sync, pool=_readers)
    count = in_thread(count_sync, pool=_readers)
