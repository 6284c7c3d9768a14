"""The feedback store (SQLite; Redis too when $MLSERVE_TEST_REDIS_URL is set) and the buffer the
prediction paths record into: ids, labels, expiry, the size bound, and flushing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import struct
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlserve.feedback import (
    WINDOWS,
    Buffered,
    BufferedBatch,
    FeedbackRecorder,
    FeedbackStore,
    FeedbackUnavailableError,
    input_hash,
    match_label,
)
from mlserve.feedback.sqlite import SqliteFeedbackStore
from mlserve.runtime.model import Prediction

# Read at import: the suite's autouse fixture removes every MLSERVE_* variable from each test.
TEST_REDIS_URL = os.environ.get("MLSERVE_TEST_REDIS_URL", "").strip() or None
HOUR = 3600.0
T0 = 1_800_000_000.0

Run = Callable[[Coroutine[Any, Any, Any]], Any]


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def run() -> Iterator[Run]:
    """run(coro) on one event loop for the whole test (a Redis client stays bound to it)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


StoreFactory = Callable[..., FeedbackStore]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "redis",
            marks=[
                pytest.mark.redis,
                pytest.mark.skipif(
                    TEST_REDIS_URL is None, reason="needs a real redis-server: set "
                    "MLSERVE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6390/0)"
                ),
            ],
        ),
    ]
)  # fmt: skip
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, run: Run, clock: Clock
) -> Iterator[StoreFactory]:
    """make_store(retention_s=..., max_records=...): a store on the test's clock."""
    closers: list[Callable[[], Coroutine[Any, Any, Any]]] = []

    def build(*, retention_s: float = 24 * HOUR, max_records: int = 1000) -> FeedbackStore:
        if request.param == "sqlite":
            sqlite = run(
                SqliteFeedbackStore.open(
                    tmp_path / "state" / f"{uuid.uuid4().hex}.sqlite3",
                    retention_s=retention_s,
                    max_records=max_records,
                    clock=clock,
                )
            )
            closers.append(sqlite.close)
            return sqlite  # type: ignore[no-any-return]
        from mlserve.backends.redis import RedisBackend
        from mlserve.feedback.redis import RedisFeedbackStore

        assert TEST_REDIS_URL is not None
        backend = RedisBackend(url=TEST_REDIS_URL, key_prefix=f"mlst-{uuid.uuid4().hex[:10]}:")
        run(backend.start())

        async def close() -> None:
            keys = [k async for k in backend.client.scan_iter(match=backend.key_prefix + "*")]
            if keys:
                await backend.client.delete(*keys)
            await backend.close()

        closers.append(close)
        return RedisFeedbackStore(
            backend, retention_s=retention_s, max_records=max_records, clock=clock
        )

    yield build
    for close in closers:
        run(close())


def prediction(label: Any = "positive", confidence: float | None = 0.9) -> Prediction:
    return Prediction(label=label, confidence=confidence, probabilities=None)


def buffered(
    request_id: str,
    clock: Clock,
    *,
    model: str = "sentiment",
    version: int = 1,
    row: Any = "a text",
    label: Any = "positive",
    confidence: float | None = 0.9,
) -> Buffered:
    return (request_id, model, version, row, label, confidence, clock())


def data(run: Run, store: FeedbackStore, *, model: str = "sentiment", version: int = 1) -> Any:
    return run(
        store.version_data(model, version, rolling=100, windows=WINDOWS, drift_window_s=HOUR)
    )


# ---------------------------------------------------------------------------- values
def test_input_hash_is_sha256_of_the_prepared_input() -> None:
    text = "Refund took three weeks — é"
    assert input_hash(text) == hashlib.sha256(b"t\x00" + text.encode()).hexdigest()
    row = [1.0, 2.5, float("nan")]
    expected = hashlib.sha256(b"f\x00" + struct.pack("<3d", *row)).hexdigest()
    assert input_hash(row) == expected
    assert input_hash([1, 2.5, float("nan")]) == expected  # 1 and 1.0 alike, any NaN alike
    assert input_hash("1") != input_hash([1.0])


@pytest.mark.parametrize(
    ("label", "classes", "expected"),
    [
        ("positive", ["negative", "positive"], "positive"),
        ("Positive", ["negative", "positive"], None),
        ("meh", ["negative", "positive"], None),
        (1, [0, 1], "1"),
        ("1", [0, 1], "1"),  # a CSV file sends text
        (1.0, [0, 1], "1"),
        (1.5, [0, 1], None),
        (True, [True, False], "True"),
        (True, [0, 1], None),  # a boolean never names an integer class
        (None, ["a"], None),
    ],
)
def test_a_label_names_a_class_or_nothing(label: Any, classes: list[Any], expected: Any) -> None:
    assert match_label(label, classes) == expected


# ---------------------------------------------------------------------------- the store
def test_a_prediction_is_found_by_its_id(make_store: StoreFactory, run: Run, clock: Clock) -> None:
    store = make_store()
    run(store.add([buffered("r1", clock, row="great", label="positive", confidence=0.75)]))

    found = run(store.lookup(["r1", "missing"]))

    assert set(found) == {"r1"}
    record = found["r1"]
    assert (record.model, record.version, record.predicted) == ("sentiment", 1, "positive")
    assert record.input_hash == input_hash("great")
    assert record.confidence == 0.75
    assert record.created_at == T0
    assert record.label is None


def test_labels_are_typed_text_and_a_missing_confidence_stays_missing(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([buffered("n", clock, model="iris", row=[1.0, 2.0], label=3, confidence=None)]))

    record = run(store.lookup(["n"]))["n"]

    assert record.predicted == "3"
    assert record.confidence is None


def test_a_second_label_replaces_the_first_and_counts_once(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([buffered("r1", clock, label="positive")]))

    assert run(store.set_labels([("r1", "negative")])) == ["accepted"]
    assert run(store.set_labels([("r1", "positive"), ("r1", "positive")])) == [
        "replaced",
        "replaced",
    ]

    figures = data(run, store)
    assert figures.labelled == 1
    assert figures.rolling == [("positive", "positive")]
    assert figures.windows["1h"] == {("positive", "positive"): 1}
    assert run(store.lookup(["r1"]))["r1"].label == "positive"


def test_labels_for_unknown_ids_are_reported_unknown(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([buffered("r1", clock)]))

    assert run(store.set_labels([("nope", "positive"), ("r1", "positive")])) == [
        "unknown",
        "accepted",
    ]


def test_an_id_used_again_names_the_newer_prediction(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([buffered("same", clock, label="positive")]))
    run(store.set_labels([("same", "positive")]))
    clock.advance(1)
    run(store.add([buffered("same", clock, version=2, label="negative")]))

    record = run(store.lookup(["same"]))["same"]

    assert (record.version, record.predicted, record.label) == (2, "negative", None)
    assert data(run, store, version=1).labelled == 0
    assert data(run, store, version=2).labelled == 0
    assert run(store.count()) == 1
    # Both predictions were made: the per-minute counts keep them.
    assert data(run, store, version=1).predictions == 1
    assert data(run, store, version=2).predictions == 1


def test_predictions_expire_after_the_retention(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(retention_s=HOUR)
    run(store.add([buffered("old", clock)]))
    run(store.set_labels([("old", "positive")]))
    clock.advance(HOUR - 1)
    run(store.add([buffered("new", clock)]))

    assert set(run(store.lookup(["old", "new"]))) == {"old", "new"}
    clock.advance(2)  # "old" is now past the retention, "new" is not

    assert set(run(store.lookup(["old", "new"]))) == {"new"}
    assert run(store.set_labels([("old", "negative")])) == ["unknown"]
    figures = data(run, store)
    assert (figures.predictions, figures.labelled) == (1, 0)
    assert figures.windows["7d"] == {}
    assert run(store.versions("sentiment")) == [1]

    clock.advance(HOUR)
    assert run(store.lookup(["new"])) == {}
    assert run(store.versions("sentiment")) == []
    assert run(store.keys()) == []


def test_expired_predictions_are_purged_on_the_next_write(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(retention_s=HOUR)
    run(store.add([buffered(f"old-{i}", clock) for i in range(5)]))
    clock.advance(2 * HOUR)

    run(store.add([buffered("fresh", clock)]))

    assert run(store.count()) == 1


def test_the_store_never_holds_more_than_max_records(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(max_records=10)
    for batch in range(5):
        run(store.add([buffered(f"r{batch}-{i}", clock) for i in range(7)]))
        clock.advance(1)
        assert run(store.count()) <= 10

    assert run(store.count()) == 10
    kept = run(store.lookup([f"r{b}-{i}" for b in range(5) for i in range(7)]))
    # The newest 10 are kept: batch 4 (7 rows) and the last 3 of batch 3.
    assert set(kept) == {f"r4-{i}" for i in range(7)} | {f"r3-{i}" for i in (4, 5, 6)}
    assert data(run, store).predictions == 35  # made, whether remembered one by one or not


def test_windows_count_labelled_predictions_by_when_they_were_made(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(retention_s=30 * 86400)
    run(store.add([buffered("two-days-ago", clock, label="negative")]))
    clock.advance(47 * HOUR)
    run(store.add([buffered("an-hour-ago", clock, label="negative")]))
    clock.advance(HOUR + 60)
    run(store.add([buffered("now", clock, label="positive")]))
    run(
        store.set_labels(
            [("two-days-ago", "negative"), ("an-hour-ago", "positive"), ("now", "positive")]
        )
    )

    figures = data(run, store)

    assert figures.windows["1h"] == {("positive", "positive"): 1}
    assert figures.windows["24h"] == {("positive", "positive"): 1, ("positive", "negative"): 1}
    assert figures.windows["7d"] == {
        ("positive", "positive"): 1,
        ("positive", "negative"): 1,
        ("negative", "negative"): 1,
    }
    # Newest first.
    assert figures.rolling == [
        ("positive", "positive"),
        ("positive", "negative"),
        ("negative", "negative"),
    ]


def test_the_rolling_window_takes_the_latest_labels(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    for i in range(6):
        run(store.add([buffered(f"r{i}", clock, label="neg" if i < 3 else "pos")]))
        clock.advance(60)
    run(store.set_labels([(f"r{i}", "pos") for i in range(6)]))

    figures = run(store.version_data("sentiment", 1, rolling=2, windows=None, drift_window_s=HOUR))

    assert figures.rolling == [("pos", "pos"), ("pos", "pos")]
    assert figures.windows == {}
    assert (figures.predictions, figures.labelled) == (6, 6)


def test_drift_tallies_count_classes_and_confidences_by_minute(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([buffered("old", clock, label="neg", confidence=0.9)]))
    clock.advance(2 * HOUR)
    run(
        store.add(
            [
                buffered("a", clock, label="pos", confidence=0.95),
                buffered("b", clock, label="pos", confidence=1.0),
                buffered("c", clock, label="neg", confidence=0.55),
                buffered("d", clock, label="neg", confidence=None),
            ]
        )
    )
    clock.advance(30)
    run(store.add([buffered("e", clock, label="pos", confidence=0.951)]))

    recent = data(run, store).recent  # the last hour: not "old"

    assert {label: c.n for label, c in recent.items()} == {"pos": 3, "neg": 1 + 1}
    assert recent["pos"].confidence_n == 3
    assert recent["pos"].confidence_sum == pytest.approx(0.95 + 1.0 + 0.951)
    assert recent["pos"].bins[95] == 2 and recent["pos"].bins[99] == 1  # 1.0 in the last bin
    assert (recent["neg"].confidence_n, recent["neg"].bins[55]) == (1, 1)
    assert sum(recent["neg"].bins) == 1  # a missing confidence is counted, not binned
    assert data(run, store).predictions == 6


def test_versions_and_keys_list_what_has_predictions(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(
        store.add(
            [
                buffered("a", clock, model="sentiment", version=3),
                buffered("b", clock, model="sentiment", version=1),
                buffered("c", clock, model="iris", version=2, row=[1.0]),
            ]
        )
    )

    assert run(store.versions("sentiment")) == [1, 3]
    assert run(store.versions("other")) == []
    assert run(store.keys()) == [("iris", 2), ("sentiment", 1), ("sentiment", 3)]


def batch_of(
    request_id: str,
    clock: Clock,
    rows: list[Any],
    labels: list[Any],
    confidences: list[float | None] | None = None,
    *,
    version: int = 1,
) -> BufferedBatch:
    """A batch request's rows as the recorder buffers them."""
    confidences = confidences or [0.9] * len(rows)
    answers = [prediction(label, c) for label, c in zip(labels, confidences, strict=True)]
    return BufferedBatch.of(request_id, "sentiment", version, rows, answers, clock())


def test_a_batchs_rows_are_found_and_labelled_by_request_id_and_row(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    batch = batch_of(
        "b", clock, ["good", "bad", "meh"], ["positive", "negative", "positive"], [0.8, None, 0.6]
    )
    run(store.add([batch, buffered("s", clock)]))

    found = run(store.lookup(["b-0", "b-1", "b-2", "b-3", "b-01", "b", "b-x", "s"]))

    assert set(found) == {"b-0", "b-1", "b-2", "s"}  # not past its rows, nor "01" for 1
    row = found["b-1"]
    assert (row.model, row.version, row.predicted, row.confidence) == (
        "sentiment",
        1,
        "negative",
        None,
    )
    assert (row.input_hash, row.created_at, row.label) == (input_hash("bad"), T0, None)
    assert found["b-2"].confidence == 0.6 and found["b-2"].input_hash == input_hash("meh")
    assert run(store.count()) == 4
    outcomes = run(store.set_labels([("b-1", "negative"), ("b-2", "negative"), ("b-3", "x")]))
    assert outcomes == ["accepted", "accepted", "unknown"]
    assert run(store.set_labels([("b-2", "positive")])) == ["replaced"]
    assert run(store.lookup(["b-2"]))["b-2"].label == "positive"
    figures = data(run, store)
    assert figures.labelled == 2
    assert figures.windows["1h"] == {("negative", "negative"): 1, ("positive", "positive"): 1}
    assert sorted(figures.rolling) == [("negative", "negative"), ("positive", "positive")]
    assert figures.predictions == 4
    assert {label: c.n for label, c in figures.recent.items()} == {"positive": 3, "negative": 1}
    assert figures.recent["positive"].confidence_sum == pytest.approx(0.8 + 0.6 + 0.9)
    assert figures.recent["negative"].confidence_n == 0  # its one confidence was missing


def test_a_reused_id_names_the_newer_of_a_batch_row_and_a_prediction(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store()
    run(store.add([batch_of("b", clock, ["x", "y"], ["positive", "positive"])]))
    assert run(store.set_labels([("b-1", "positive")])) == ["accepted"]
    clock.advance(1)
    run(store.add([buffered("b-0", clock, version=2, label="negative")]))  # one of its ids

    found = run(store.lookup(["b-0", "b-1"]))
    assert (found["b-0"].version, found["b-0"].predicted) == (2, "negative")
    assert (found["b-1"].version, found["b-1"].label) == (1, "positive")

    clock.advance(1)
    run(store.add([batch_of("b", clock, ["z", "w"], ["negative", "negative"], version=3)]))

    found = run(store.lookup(["b-0", "b-1"]))
    assert {(r.version, r.predicted, r.label) for r in found.values()} == {(3, "negative", None)}
    assert data(run, store, version=1).labelled == 0  # the label went with the old row
    assert run(store.set_labels([("b-1", "negative")])) == ["accepted"]
    assert data(run, store, version=3).labelled == 1


def test_a_batch_is_kept_whole_within_max_records(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(max_records=10)
    for b in range(5):
        run(store.add([batch_of(f"r{b}", clock, ["t"] * 4, ["positive"] * 4)]))
        clock.advance(1)
        assert run(store.count()) <= 10

    kept = set(run(store.lookup([f"r{b}-{i}" for b in range(5) for i in range(4)])))
    # The newest rows: batches 3 and 4 whole; the store may keep some of batch 2 as well.
    assert (
        {f"r{b}-{i}" for b in (3, 4) for i in range(4)}
        <= kept
        <= {f"r{b}-{i}" for b in (2, 3, 4) for i in range(4)}
    )
    assert len(kept) == run(store.count())
    assert data(run, store).predictions == 20


def test_a_batch_expires_after_the_retention(
    make_store: StoreFactory, run: Run, clock: Clock
) -> None:
    store = make_store(retention_s=HOUR)
    run(store.add([batch_of("old", clock, ["a", "b"], ["positive", "negative"])]))
    clock.advance(HOUR + 1)

    assert run(store.lookup(["old-0", "old-1"])) == {}
    assert run(store.set_labels([("old-0", "positive")])) == ["unknown"]
    run(store.add([buffered("fresh", clock)]))
    assert run(store.count()) == 1  # purged on the write


def test_a_store_file_of_schema_1_is_opened_and_kept(
    tmp_path: Path, run: Run, clock: Clock
) -> None:
    import sqlite3

    path = tmp_path / "feedback.sqlite3"
    store = run(SqliteFeedbackStore.open(path, clock=clock))
    run(store.add([buffered("r1", clock)]))
    run(store.set_labels([("r1", "positive")]))
    run(store.close())
    with sqlite3.connect(path) as db:  # as mlserve with schema 1 left it
        db.execute("DROP TABLE batches")
        db.execute("PRAGMA user_version = 1")

    store = run(SqliteFeedbackStore.open(path, clock=clock))
    try:
        assert run(store.lookup(["r1"]))["r1"].label == "positive"
        run(store.add([batch_of("b", clock, ["x"], ["negative"])]))
        assert set(run(store.lookup(["r1", "b-0"]))) == {"r1", "b-0"}
    finally:
        run(store.close())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


@pytest.fixture
def two_stores(
    tmp_path: Path, run: Run, clock: Clock
) -> Iterator[tuple[SqliteFeedbackStore, SqliteFeedbackStore]]:
    """Two SQLite stores on one file, as two server processes of a host open it."""
    path = tmp_path / "shared.sqlite3"
    one = run(SqliteFeedbackStore.open(path, clock=clock))
    two = run(SqliteFeedbackStore.open(path, clock=clock))
    yield one, two
    run(one.close())
    run(two.close())


def test_a_sqlite_store_is_shared_by_two_processes_opening_one_file(
    two_stores: tuple[SqliteFeedbackStore, SqliteFeedbackStore], run: Run, clock: Clock
) -> None:
    one, two = two_stores
    run(one.add([buffered("r1", clock)]))
    assert run(two.set_labels([("r1", "positive")])) == ["accepted"]
    assert run(one.lookup(["r1"]))["r1"].label == "positive"


def test_two_stores_on_one_file_number_their_batches_and_predictions_apart(
    two_stores: tuple[SqliteFeedbackStore, SqliteFeedbackStore], run: Run, clock: Clock
) -> None:
    one, two = two_stores
    run(one.add([batch_of("b1", clock, ["x", "y"], ["positive", "negative"])]))
    run(two.add([buffered("s1", clock)]))
    run(one.add([buffered("s2", clock), batch_of("b2", clock, ["z"], ["negative"])]))
    run(two.add([batch_of("b3", clock, ["w", "v"], ["positive", "positive"])]))

    ids = ["b1-0", "b1-1", "s1", "s2", "b2-0", "b3-0", "b3-1"]
    assert set(run(two.lookup(ids))) == set(ids)  # none replaced another's
    assert run(one.count()) == 7


def test_a_newer_schema_is_refused(tmp_path: Path, run: Run) -> None:
    import sqlite3

    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="newer mlserve"):
        run(SqliteFeedbackStore.open(path))


# ---------------------------------------------------------------------------- the buffer
class FlakyStore:
    """A store that fails while `down` is set, and remembers what it was given."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[Buffered]] = []

    async def add(self, batch: Any) -> None:
        if self.down:
            raise FeedbackUnavailableError("down")
        self.batches.append(list(batch))


def test_the_buffer_drops_and_counts_beyond_its_bound(run: Run, clock: Clock) -> None:
    dropped: list[int] = []
    recorder = FeedbackRecorder(buffer_size=3, clock=clock, on_drop=dropped.append)

    for i in range(5):
        recorder.record(f"r{i}", "sentiment", 1, "text", prediction())
    recorder.record_many("b", "sentiment", 1, ["x", "y"], [prediction(), prediction()])

    assert len(recorder) == 3
    assert recorder.dropped == 4
    assert sum(dropped) == 4


def test_batch_rows_are_recorded_as_request_id_and_index(run: Run, clock: Clock) -> None:
    store = FlakyStore()
    recorder = FeedbackRecorder(clock=clock)
    recorder.store = store  # type: ignore[assignment]

    recorder.record_many(
        "rid", "iris", 2, [[1.0], [2.0]], [prediction("a", 0.5), prediction("b", None)]
    )
    assert run(recorder.flush()) == 2

    ((entry,),) = store.batches  # the batch is one entry: no work per row on the request path
    assert isinstance(entry, BufferedBatch)
    assert entry.expand() == [
        ("rid-0", "iris", 2, [1.0], "a", 0.5, T0),
        ("rid-1", "iris", 2, [2.0], "b", None, T0),
    ]
    assert run(recorder.flush()) == 0  # nothing left


def test_a_buffered_batch_keeps_labels_and_confidences_not_the_answers(clock: Clock) -> None:
    """While a store is down the buffer holds up to buffer_size rows: each must cost a label
    and a confidence, not an answer with its probability map."""
    recorder = FeedbackRecorder(clock=clock)
    answers = [
        Prediction(label="a", confidence=0.7, probabilities={"a": 0.7, "b": 0.3}),
        Prediction(label="b", confidence=None, probabilities={"a": 0.4, "b": 0.6}),
    ]
    recorder.record_many("rid", "m", 1, ["x", "y"], answers)

    (entry,) = recorder._buffer
    assert isinstance(entry, BufferedBatch)
    held = [getattr(entry, f.name) for f in dataclasses.fields(entry)]
    assert not any(
        isinstance(v, Prediction) for value in held if isinstance(value, list) for v in value
    )
    assert (list(entry.labels), list(entry.confidences)) == (["a", "b"], [0.7, None])


def test_a_failed_flush_keeps_the_predictions_for_the_next_one(run: Run, clock: Clock) -> None:
    store = FlakyStore()
    recorder = FeedbackRecorder(buffer_size=4, clock=clock)
    recorder.store = store  # type: ignore[assignment]
    recorder.record("a", "m", 1, "x", prediction())
    recorder.record("b", "m", 1, "x", prediction())
    store.down = True

    with pytest.raises(FeedbackUnavailableError):
        run(recorder.flush())
    for request_id in "cde":  # one more than the room left: the last is dropped
        recorder.record(request_id, "m", 1, "x", prediction())
    store.down = False
    assert run(recorder.flush()) == 4

    assert [item[0] for item in store.batches[0]] == ["a", "b", "c", "d"]
    assert recorder.dropped == 1


def test_closing_the_recorder_writes_what_is_buffered(
    tmp_path: Path, run: Run, clock: Clock
) -> None:
    store = run(SqliteFeedbackStore.open(tmp_path / "f.sqlite3", clock=clock))
    recorder = FeedbackRecorder(flush_interval_s=3600, clock=clock)
    recorder.store = store

    async def scenario() -> None:
        recorder.start()
        recorder.record("r1", "sentiment", 1, "text", prediction())
        await recorder.close()

    run(scenario())
    try:
        assert set(run(store.lookup(["r1"]))) == {"r1"}
    finally:
        run(store.close())


class ArrivalsDuringAFailedFlush:
    """A store that fails, while predictions "c" and "d" arrive at the recorder meanwhile."""

    def __init__(self, recorder: FeedbackRecorder) -> None:
        self.recorder = recorder

    async def add(self, batch: Any) -> None:
        for request_id in "cd":
            self.recorder.record(request_id, "m", 1, "x", prediction())
        raise FeedbackUnavailableError("down")


def buffered_rows(recorder: FeedbackRecorder) -> list[tuple[str, Any]]:
    """(id, row) of every prediction the recorder holds, a batch's rows one by one."""
    return [
        (item[0], item[3])
        for entry in recorder._buffer
        for item in (entry.expand() if isinstance(entry, BufferedBatch) else [entry])
    ]


def test_a_failed_batch_put_back_past_the_bound_keeps_the_newest(run: Run, clock: Clock) -> None:
    recorder = FeedbackRecorder(buffer_size=3, clock=clock)
    recorder.store = ArrivalsDuringAFailedFlush(recorder)  # type: ignore[assignment]
    recorder.record("a", "m", 1, "x", prediction())
    recorder.record("b", "m", 1, "x", prediction())

    with pytest.raises(FeedbackUnavailableError):
        run(recorder.flush())

    assert [request_id for request_id, _ in buffered_rows(recorder)] == ["b", "c", "d"]
    assert recorder.dropped == 1


def test_a_batch_put_back_past_the_bound_keeps_its_newest_rows_and_their_ids(
    run: Run, clock: Clock
) -> None:
    recorder = FeedbackRecorder(buffer_size=4, clock=clock)
    recorder.store = ArrivalsDuringAFailedFlush(recorder)  # type: ignore[assignment]
    recorder.record_many("b", "m", 1, ["w", "x", "y"], [prediction()] * 3)

    with pytest.raises(FeedbackUnavailableError):
        run(recorder.flush())

    assert (len(recorder), recorder.dropped) == (4, 1)
    assert buffered_rows(recorder) == [("b-1", "x"), ("b-2", "y"), ("c", "x"), ("d", "x")]
