"""The SQLite job store: submission, leases, resume, cancellation, expiry, concurrent claims."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlserve.errors import MlserveError
from mlserve.jobs import (
    Job,
    JobNotCompletedError,
    JobNotFoundError,
    LeaseLostError,
)
from mlserve.jobs.sqlite import SqliteJobStore

LEASE = 10.0
TTL = 3600.0


class FakeClock:
    """Wall-clock stand-in: leases and expiry move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.sqlite3"


@pytest.fixture
def open_store(db_path: Path, clock: FakeClock) -> Iterator[Callable[..., SqliteJobStore]]:
    """open_store(**kwargs): a store on the test's database file (closed after the test)."""
    stores: list[SqliteJobStore] = []

    def make(**kwargs: Any) -> SqliteJobStore:
        kwargs.setdefault("chunk_size", 3)
        kwargs.setdefault("ttl_s", TTL)
        kwargs.setdefault("clock", clock)
        store = SqliteJobStore(db_path, **kwargs)
        store.initialize()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close_sync()


@pytest.fixture
def store(open_store: Callable[..., SqliteJobStore]) -> SqliteJobStore:
    return open_store()


def submit(store: SqliteJobStore, n: int = 7, kind: Any = "texts") -> Job:
    return store.submit_sync(
        model_reference="sentiment@production",
        model="sentiment",
        version=3,
        kind=kind,
        inputs=[f"text {i}" for i in range(n)],
    )


def score(store: SqliteJobStore, job: Job, owner: str, chunks: int | None = None) -> Job:
    """Work like a runner: save results (the input, upper-cased) for the next chunks."""
    current = store.get_sync(job.id)
    while chunks is None or chunks > 0:
        chunk = store.next_chunk_sync(job.id)
        if chunk is None:
            break
        results = [{"prediction": text.upper(), "row": chunk.start + i}
                   for i, text in enumerate(chunk.inputs)]  # fmt: skip
        current = store.save_chunk_result_sync(job.id, owner, chunk.index, results, LEASE)
        chunks = None if chunks is None else chunks - 1
    return current


def test_submit_stores_a_pending_job_split_into_chunks(store: SqliteJobStore) -> None:
    job = submit(store, 7)

    assert len(job.id) == 32 and int(job.id, 16) >= 0  # uuid4 hex
    assert (job.status, job.total, job.done, job.chunk_size, job.chunks) == ("pending", 7, 0, 3, 3)
    assert (job.model, job.version, job.kind) == ("sentiment", 3, "texts")
    assert job.model_reference == "sentiment@production"
    assert job.started_at is None and job.lease_owner is None
    assert store.get_sync(job.id) == job
    first = store.next_chunk_sync(job.id)
    assert first is not None
    assert (first.index, first.start, first.inputs) == (0, 0, ["text 0", "text 1", "text 2"])


def test_submit_refuses_an_empty_job(store: SqliteJobStore) -> None:
    with pytest.raises(ValueError, match="at least one input"):
        submit(store, 0)


def test_unknown_job_is_not_found(store: SqliteJobStore) -> None:
    with pytest.raises(JobNotFoundError) as caught:
        store.get_sync("0" * 32)
    assert caught.value.status_code == 404
    with pytest.raises(JobNotFoundError):
        store.delete_sync("0" * 32)
    with pytest.raises(JobNotFoundError):
        store.cancel_sync("0" * 32)


def test_claim_takes_the_oldest_pending_job_once(store: SqliteJobStore, clock: FakeClock) -> None:
    first = submit(store)
    clock.advance(1)
    second = submit(store)

    claimed = store.claim_next_sync("a", LEASE)
    assert claimed is not None and claimed.id == first.id
    assert claimed.status == "running"
    assert claimed.lease_owner == "a"
    assert claimed.lease_expires_at == clock.now + LEASE
    assert claimed.started_at == clock.now
    assert claimed.attempts == 1
    again = store.claim_next_sync("b", LEASE)
    assert again is not None and again.id == second.id
    assert store.claim_next_sync("c", LEASE) is None


def test_an_expired_lease_lets_another_worker_resume_from_the_first_chunk_without_results(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job = submit(store, 8)  # chunks of 3, 3, 2
    claimed = store.claim_next_sync("dead-worker", LEASE)
    assert claimed is not None
    score(store, job, "dead-worker", chunks=1)  # then the process dies: no renewal

    clock.advance(LEASE - 0.5)
    assert store.claim_next_sync("b", LEASE) is None  # still leased
    clock.advance(1)
    resumed = store.claim_next_sync("b", LEASE)

    assert resumed is not None and resumed.id == job.id
    # The dead worker saved a chunk: its attempt is not held against the job.
    assert (resumed.status, resumed.done, resumed.attempts) == ("running", 3, 1)
    assert resumed.started_at == claimed.started_at  # first start kept
    chunk = store.next_chunk_sync(job.id)
    assert chunk is not None and (chunk.index, chunk.start) == (1, 3)
    with pytest.raises(LeaseLostError):  # the old owner, should it wake up, writes nothing
        store.save_chunk_result_sync(job.id, "dead-worker", 1, [{}] * 3, LEASE)
    score(store, job, "b")
    done = store.complete_sync(job.id, "b")
    assert (done.status, done.done) == ("completed", 8)
    page = store.results_sync(job.id, 0, 100)
    assert [item["row"] for item in page.items] == list(range(8))  # all there, in order
    assert [item["prediction"] for item in page.items] == [f"TEXT {i}" for i in range(8)]


def test_renewing_keeps_the_lease_and_only_the_owner_can(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job = submit(store)
    assert store.claim_next_sync("a", LEASE) is not None

    clock.advance(LEASE * 0.8)
    assert store.renew_lease_sync(job.id, "a", LEASE) is True
    assert store.renew_lease_sync(job.id, "b", LEASE) is False
    clock.advance(LEASE * 0.8)  # past the first lease, within the renewed one
    assert store.claim_next_sync("b", LEASE) is None
    clock.advance(LEASE * 0.3)
    taken = store.claim_next_sync("b", LEASE)
    assert taken is not None and taken.lease_owner == "b"
    assert store.renew_lease_sync(job.id, "a", LEASE) is False


def test_saving_a_chunk_records_progress_and_renews_the_lease(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job = submit(store, 7)
    store.claim_next_sync("a", LEASE)
    clock.advance(5)

    after = score(store, job, "a", chunks=2)

    assert after.done == 6
    assert after.lease_expires_at == clock.now + LEASE
    chunk = store.next_chunk_sync(job.id)
    assert chunk is not None and (chunk.index, chunk.inputs) == (2, ["text 6"])
    with pytest.raises(LeaseLostError):  # a chunk is stored once
        store.save_chunk_result_sync(job.id, "a", 0, [{}] * 3, LEASE)
    assert store.get_sync(job.id).done == 6


def test_complete_needs_every_chunk(store: SqliteJobStore) -> None:
    job = submit(store, 7)
    store.claim_next_sync("a", LEASE)
    score(store, job, "a", chunks=2)

    with pytest.raises(ValueError, match="without results"):
        store.complete_sync(job.id, "a")
    assert store.get_sync(job.id).status == "running"


def test_results_page_across_chunk_boundaries(store: SqliteJobStore) -> None:
    job = submit(store, 7)
    store.claim_next_sync("a", LEASE)
    score(store, job, "a")
    store.complete_sync(job.id, "a")

    pages = []
    offset: int | None = 0
    while offset is not None:
        page = store.results_sync(job.id, offset, 2)
        pages.append([item["row"] for item in page.items])
        offset = page.next_offset
    assert pages == [[0, 1], [2, 3], [4, 5], [6]]
    assert [i["row"] for i in store.results_sync(job.id, 4, 100).items] == [4, 5, 6]
    past = store.results_sync(job.id, 7, 10)
    assert past.items == [] and past.next_offset is None


def test_results_before_completion_are_a_conflict(store: SqliteJobStore) -> None:
    job = submit(store)
    with pytest.raises(JobNotCompletedError, match="pending") as caught:
        store.results_sync(job.id, 0, 10)
    assert caught.value.status_code == 409
    store.claim_next_sync("a", LEASE)
    with pytest.raises(JobNotCompletedError, match="running"):
        store.results_sync(job.id, 0, 10)
    store.cancel_sync(job.id)
    with pytest.raises(JobNotCompletedError, match="cancelled"):
        store.results_sync(job.id, 0, 10)


def test_cancel_a_pending_job(store: SqliteJobStore, clock: FakeClock) -> None:
    job = submit(store)

    cancelled = store.cancel_sync(job.id)

    assert cancelled is not None
    assert (cancelled.status, cancelled.finished_at) == ("cancelled", clock.now)
    assert cancelled.expires_at == clock.now + TTL
    assert store.claim_next_sync("a", LEASE) is None
    assert store.next_chunk_sync(job.id) is None  # its inputs are gone


def test_cancel_a_running_job_stops_its_worker_at_the_next_write(store: SqliteJobStore) -> None:
    job = submit(store, 7)
    store.claim_next_sync("a", LEASE)
    score(store, job, "a", chunks=1)

    assert store.cancel_sync(job.id) is not None

    assert store.renew_lease_sync(job.id, "a", LEASE) is False
    with pytest.raises(LeaseLostError):
        store.save_chunk_result_sync(job.id, "a", 1, [{}] * 3, LEASE)
    with pytest.raises(LeaseLostError):
        store.complete_sync(job.id, "a")
    after = store.get_sync(job.id)
    assert (after.status, after.done) == ("cancelled", 3)


def test_cancel_a_finished_job_changes_nothing(store: SqliteJobStore) -> None:
    job = submit(store, 2)
    store.claim_next_sync("a", LEASE)
    score(store, job, "a")
    completed = store.complete_sync(job.id, "a")

    assert store.cancel_sync(job.id) is None
    assert store.get_sync(job.id) == completed


def test_delete_removes_the_job_and_its_rows(store: SqliteJobStore, db_path: Path) -> None:
    job = submit(store, 7)
    store.claim_next_sync("a", LEASE)
    score(store, job, "a", chunks=1)

    store.delete_sync(job.id)

    with pytest.raises(JobNotFoundError):
        store.get_sync(job.id)
    with pytest.raises(LeaseLostError):  # its worker writes nothing more
        store.save_chunk_result_sync(job.id, "a", 1, [{}] * 3, LEASE)
    with sqlite3.connect(db_path) as db:
        for table in ("jobs", "job_inputs", "job_results"):
            query = f"SELECT COUNT(*) FROM {table}"  # noqa: S608 - table names from this list
            assert db.execute(query).fetchone()[0] == 0


def test_purge_removes_finished_jobs_past_their_expiry_only(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    finished = submit(store, 2)
    store.claim_next_sync("a", LEASE)
    score(store, finished, "a")
    store.complete_sync(finished.id, "a")
    pending = submit(store)

    clock.advance(TTL - 1)
    assert store.purge_expired_sync() == 0
    clock.advance(2)
    assert store.purge_expired_sync() == 1

    with pytest.raises(JobNotFoundError):
        store.get_sync(finished.id)
    assert store.get_sync(pending.id).status == "pending"  # accepted work never expires


def test_release_gives_the_job_back_without_counting_an_attempt(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job = submit(store)
    store.claim_next_sync("a", LEASE)

    store.release_sync(job.id, "a", delay_s=2.0)

    assert store.claim_next_sync("b", LEASE) is None  # not before the delay
    clock.advance(2)
    again = store.claim_next_sync("b", LEASE)
    assert again is not None and (again.lease_owner, again.attempts) == ("b", 1)


def test_a_job_whose_worker_keeps_dying_is_failed_after_max_attempts(
    open_store: Callable[..., SqliteJobStore], clock: FakeClock
) -> None:
    store = open_store(max_attempts=3)
    job = submit(store)
    for n in range(3):
        claimed = store.claim_next_sync(f"w{n}", LEASE)
        assert claimed is not None and claimed.attempts == n + 1
        clock.advance(LEASE + 1)  # the worker died

    assert store.claim_next_sync("w3", LEASE) is None
    failed = store.get_sync(job.id)
    assert failed.status == "failed"
    assert failed.error is not None and "stopped 3 times" in failed.error
    assert failed.expires_at == clock.now + TTL


def test_two_stores_on_one_file_never_claim_the_same_job(
    open_store: Callable[..., SqliteJobStore],
) -> None:
    first, second = open_store(), open_store()
    jobs = {submit(first, 1).id for _ in range(40)}
    claims: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(store: SqliteJobStore, owner: str) -> None:
        try:
            start.wait()
            while (job := store.claim_next_sync(owner, LEASE)) is not None:
                claims.append(job.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(first if n % 2 else second, f"w{n}"))
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert sorted(claims) == sorted(jobs)  # each job claimed exactly once


def test_jobs_survive_reopening_the_database(
    open_store: Callable[..., SqliteJobStore], db_path: Path
) -> None:
    job = submit(open_store(), 5)

    reopened = open_store()

    assert reopened.get_sync(job.id).total == 5
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_a_newer_schema_is_refused(
    open_store: Callable[..., SqliteJobStore], db_path: Path
) -> None:
    open_store()
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")

    with pytest.raises(MlserveError, match="newer mlserve"):
        open_store()


def test_the_async_interface_runs_a_job_end_to_end(db_path: Path) -> None:
    async def scenario() -> tuple[list[Any], list[list[Any]], Job]:
        store = await SqliteJobStore.open(db_path, chunk_size=2)
        try:
            job = await store.submit(
                model_reference=None, model="iris", version=1, kind="records",
                inputs=[[i, i] for i in range(5)],
            )  # fmt: skip
            claimed = await store.claim_next("w", LEASE)
            assert claimed is not None and claimed.id == job.id
            assert await store.renew_lease(job.id, "w", LEASE)
            while (chunk := await store.next_chunk(job.id)) is not None:
                results = [{"sum": a + b} for a, b in chunk.inputs]
                await store.save_chunk_result(job.id, "w", chunk.index, results, LEASE)
            await store.complete(job.id, "w")
            page = await store.results(job.id, 1, 3)
            streamed = [items async for items in store.iter_results(job.id, offset=3)]
            return page.items, streamed, await store.get(job.id)
        finally:
            await store.close()

    page, streamed, job = asyncio.run(scenario())

    assert page == [{"sum": 2}, {"sum": 4}, {"sum": 6}]
    assert streamed == [[{"sum": 6}], [{"sum": 8}]]  # chunk 1 from its second row, then chunk 2
    assert (job.status, job.done, job.kind) == ("completed", 5, "records")
