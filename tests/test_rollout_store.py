"""The SQLite rollout store: create and compare-and-set, one running rollout per model,
leases, additive windows, persistence, and races between threads and between processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clock import Clock
from support.rollouts import START, counts, ended, next_step, running_state

from mlserve.config import load_settings
from mlserve.rollouts import (
    LATENCY_BOUNDS_MS,
    RolloutConflictError,
    RolloutState,
    RolloutsUnavailableError,
    new_rollout_id,
    open_rollout_store,
)
from mlserve.rollouts.sqlite import SqliteRolloutStore

PROCESSES = 4


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "rollouts.sqlite3"


@pytest.fixture
def open_store(db_path: Path, clock: Clock) -> Iterator[Callable[..., SqliteRolloutStore]]:
    """open_store(**kwargs): a store on the test's database file (closed after the test)."""
    stores: list[SqliteRolloutStore] = []

    def make(**kwargs: Any) -> SqliteRolloutStore:
        kwargs.setdefault("clock", clock)
        store = SqliteRolloutStore(db_path, **kwargs)
        store.initialize()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close_sync()


@pytest.fixture
def store(open_store: Callable[..., SqliteRolloutStore]) -> SqliteRolloutStore:
    return open_store()


# ---------------------------------------------------------------------------- create, replace
def test_create_stores_a_running_rollout_at_revision_1(store: SqliteRolloutStore) -> None:
    state = running_state()
    created = store.create_sync(state)

    assert created == dataclasses.replace(state, revision=1)
    assert store.get_sync("iris") == created
    assert store.get_sync("other") is None


def test_create_refuses_a_state_that_is_not_running(store: SqliteRolloutStore) -> None:
    with pytest.raises(ValueError, match="running"):
        store.create_sync(ended(running_state()))
    assert store.get_sync("iris") is None


def test_replace_at_the_stored_revision_writes_the_next_one(store: SqliteRolloutStore) -> None:
    created = store.create_sync(running_state())
    written = store.replace_sync(next_step(created), expected_revision=1)

    assert written is not None
    assert (written.revision, written.step, len(written.events)) == (2, 1, 2)
    assert store.get_sync("iris") == written
    again = store.replace_sync(next_step(written), expected_revision=2)
    assert again is not None and again.revision == 3


def test_replace_with_a_stale_revision_writes_nothing(store: SqliteRolloutStore) -> None:
    created = store.create_sync(running_state())
    first = store.replace_sync(next_step(created), expected_revision=1)
    late = store.replace_sync(ended(created, "aborted"), expected_revision=1)

    assert late is None
    assert store.get_sync("iris") == first


def test_replace_of_another_rollout_id_writes_nothing(store: SqliteRolloutStore) -> None:
    created = store.create_sync(running_state())
    stranger = dataclasses.replace(next_step(created), id=new_rollout_id())

    assert store.replace_sync(stranger, expected_revision=1) is None
    assert store.replace_sync(next_step(running_state("absent")), expected_revision=0) is None
    assert store.get_sync("iris") == created
    assert store.get_sync("absent") is None


def test_a_second_running_rollout_of_a_model_is_a_conflict(store: SqliteRolloutStore) -> None:
    first = store.create_sync(running_state())
    with pytest.raises(RolloutConflictError, match=first.id) as raised:
        store.create_sync(running_state())

    assert raised.value.status_code == 409
    assert store.get_sync("iris") == first
    assert store.create_sync(running_state("wine")).revision == 1  # another model may


def test_a_rollout_replaces_the_ended_one_of_its_model(store: SqliteRolloutStore) -> None:
    first = store.create_sync(running_state())
    store.replace_sync(ended(first, "rolled_back"), expected_revision=1)
    second = store.create_sync(running_state())

    assert second.revision == 1
    assert store.get_sync("iris") == second
    assert store.replace_sync(ended(first), expected_revision=2) is None  # the old one is gone


def test_running_lists_only_running_rollouts(store: SqliteRolloutStore) -> None:
    iris = store.create_sync(running_state("iris"))
    wine = store.create_sync(running_state("wine"))
    digits = store.create_sync(running_state("digits"))
    promoted = store.replace_sync(ended(wine), expected_revision=1)

    assert store.running_sync() == [digits, iris]
    assert promoted is not None and store.get_sync("wine") == promoted
    store.replace_sync(ended(iris, "aborted"), expected_revision=1)
    store.replace_sync(ended(digits, "aborted"), expected_revision=1)
    assert store.running_sync() == []


# ---------------------------------------------------------------------------- leases
def test_a_free_lease_is_taken_and_refused_to_others_while_live(
    store: SqliteRolloutStore, clock: Clock
) -> None:
    assert store.acquire_sync("iris", "a", 10.0)
    assert not store.acquire_sync("iris", "b", 10.0)
    clock.advance(9.9)
    assert not store.acquire_sync("iris", "b", 10.0)
    assert store.acquire_sync("wine", "b", 10.0)  # leases are per model


def test_the_holder_renews_its_lease(store: SqliteRolloutStore, clock: Clock) -> None:
    assert store.acquire_sync("iris", "a", 10.0)
    clock.advance(8.0)
    assert store.acquire_sync("iris", "a", 10.0)  # now until START + 18
    clock.advance(8.0)
    assert not store.acquire_sync("iris", "b", 10.0)
    clock.advance(2.0)
    assert store.acquire_sync("iris", "b", 10.0)


def test_an_expired_lease_goes_to_the_next_holder(store: SqliteRolloutStore, clock: Clock) -> None:
    assert store.acquire_sync("iris", "a", 5.0)
    clock.advance(5.0)
    assert store.acquire_sync("iris", "b", 5.0)
    assert not store.acquire_sync("iris", "a", 5.0)


def test_only_the_holder_releases_a_lease(store: SqliteRolloutStore) -> None:
    assert store.acquire_sync("iris", "a", 60.0)
    store.release_sync("iris", "b")
    assert not store.acquire_sync("iris", "b", 60.0)
    store.release_sync("iris", "a")
    assert store.acquire_sync("iris", "b", 60.0)
    store.release_sync("absent", "a")  # nothing to release: no error


def test_a_lease_needs_a_positive_ttl(store: SqliteRolloutStore) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        store.acquire_sync("iris", "a", 0.0)


# ---------------------------------------------------------------------------- windows
def test_windows_add_up_by_rollout_step_and_version(store: SqliteRolloutStore) -> None:
    rollout = store.create_sync(running_state())
    slow_failure = counts(1, errors=1, seconds=2.0)
    store.add_windows_sync([(rollout.id, 0, 1, counts(10)), (rollout.id, 0, 2, counts(3))])
    store.add_windows_sync([(rollout.id, 0, 2, slow_failure), (rollout.id, 1, 2, counts(7))])
    store.add_windows_sync([])

    expected = counts(3)
    expected.merge(slow_failure)
    step0 = store.windows_sync(rollout.id, 0)
    assert step0 == {1: counts(10), 2: expected}
    assert (step0[2].requests, step0[2].errors) == (4, 1)
    assert step0[2].quantile_ms(1.0) == min(b for b in LATENCY_BOUNDS_MS if b >= 2000.0)
    assert store.windows_sync(rollout.id, 1) == {2: counts(7)}
    assert store.windows_sync(rollout.id, 2) == {}
    assert store.windows_sync("other", 0) == {}


def test_windows_from_several_writers_are_all_counted(
    open_store: Callable[..., SqliteRolloutStore],
) -> None:
    writers = [open_store() for _ in range(4)]
    rollout = writers[0].create_sync(running_state())
    rounds = 25

    def write(store: SqliteRolloutStore, version: int) -> None:
        for _ in range(rounds):
            store.add_windows_sync(
                [(rollout.id, 0, 1, counts(2, errors=1)), (rollout.id, 0, 2, counts(1))]
            )

    threads = [threading.Thread(target=write, args=(store, v)) for store in writers for v in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    totals = writers[0].windows_sync(rollout.id, 0)
    writes = len(threads) * rounds
    assert (totals[1].requests, totals[1].errors) == (2 * writes, writes)
    assert (totals[2].requests, totals[2].errors) == (writes, 0)
    assert sum(totals[1].buckets) == 2 * writes


def test_a_new_rollout_drops_the_windows_of_the_one_it_replaces(
    store: SqliteRolloutStore, db_path: Path
) -> None:
    first = store.create_sync(running_state())
    other = store.create_sync(running_state("wine"))
    store.add_windows_sync([(first.id, 0, 1, counts(5)), (other.id, 0, 1, counts(5))])
    store.replace_sync(ended(first), expected_revision=1)
    assert store.windows_sync(first.id, 0) == {1: counts(5)}  # ended: still readable

    second = store.create_sync(running_state())

    assert store.windows_sync(first.id, 0) == {}
    assert store.windows_sync(other.id, 0) == {1: counts(5)}  # another model's: kept
    with sqlite3.connect(db_path) as db:
        (ids,) = db.execute("SELECT COUNT(DISTINCT rollout_id) FROM rollout_windows").fetchone()
    assert ids == 1
    assert store.get_sync("iris") == second


# ---------------------------------------------------------------------------- the file
def test_rollouts_leases_and_windows_survive_reopening(
    open_store: Callable[..., SqliteRolloutStore],
) -> None:
    first = open_store()
    rollout = first.create_sync(running_state())
    moved = first.replace_sync(next_step(rollout), expected_revision=1)
    first.acquire_sync("iris", "a", 60.0)
    first.add_windows_sync([(rollout.id, 1, 2, counts(4, errors=1))])
    first.close_sync()

    again = open_store()
    assert again.get_sync("iris") == moved
    assert again.running_sync() == [moved]
    assert not again.acquire_sync("iris", "b", 60.0)
    assert again.windows_sync(rollout.id, 1) == {2: counts(4, errors=1)}


def test_a_database_from_a_newer_schema_is_unavailable(
    db_path: Path, store: SqliteRolloutStore
) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RolloutsUnavailableError, match="newer mlserve"):
        SqliteRolloutStore(db_path).initialize()


def test_a_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(RolloutsUnavailableError, match="rollout store"):
        asyncio.run(SqliteRolloutStore.open(blocker / "rollouts.sqlite3"))
    not_a_database = tmp_path / "garbage.sqlite"
    not_a_database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RolloutsUnavailableError, match="rollout store"):
        asyncio.run(SqliteRolloutStore.open(not_a_database))


def test_the_factory_opens_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    settings = load_settings(None, home=str(tmp_path / "home"))

    async def scenario() -> tuple[Any, Any, Any]:
        store = await open_rollout_store(settings)
        try:
            created = await store.create(running_state())
            moved = await store.replace(next_step(created), expected_revision=1)
            taken = await store.acquire("iris", "a", 30.0)
            await store.add_windows([(created.id, 1, 2, counts(3))])
            return moved, taken, (await store.get("iris"), await store.windows(created.id, 1))
        finally:
            await store.close()

    moved, taken, (stored, windows) = asyncio.run(scenario())
    assert isinstance(moved, RolloutState) and stored == moved and taken
    assert windows == {2: counts(3)}
    assert (settings.state_dir / "rollouts.sqlite3").is_file()


# ---------------------------------------------------------------------------- processes
# A process of its own: open the store, say "ready", wait for "go" on stdin (so that every
# process starts the race at once), do one thing, print what happened as JSON.
CHILD = """
import dataclasses, json, sys
from mlserve.rollouts.sqlite import SqliteRolloutStore

path, action, name = sys.argv[1:4]
store = SqliteRolloutStore(path)
store.initialize()
print("ready", flush=True)
sys.stdin.readline()
if action == "replace":
    state = store.get_sync("iris")
    mine = dataclasses.replace(state, figures={"writer": name})
    print(json.dumps(store.replace_sync(mine, expected_revision=1) is not None))
elif action == "acquire":
    print(json.dumps(store.acquire_sync("iris", name, 60.0)))
elif action == "count":
    conflicts = 0
    for _ in range(int(sys.argv[4])):
        while True:
            state = store.get_sync("iris")
            n = state.figures.get("n", 0)
            mine = dataclasses.replace(state, figures={"n": n + 1})
            if store.replace_sync(mine, expected_revision=state.revision) is not None:
                break
            conflicts += 1
    print(json.dumps(conflicts))
store.close_sync()
"""


def race(db_path: Path, action: str, *args: str) -> list[Any]:
    """Run CHILD `action` in PROCESSES processes at once on the file; their answers."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db_path), action, f"p{i}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.communicate(timeout=30)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return [json.loads(out) for out, _ in outputs]


@pytest.mark.slow
def test_processes_racing_to_replace_one_revision_have_one_winner(
    store: SqliteRolloutStore, db_path: Path
) -> None:
    store.create_sync(running_state())

    won = race(db_path, "replace")

    assert sorted(won) == [False] * (PROCESSES - 1) + [True]
    stored = store.get_sync("iris")
    assert stored is not None and stored.revision == 2
    assert stored.figures["writer"] == f"p{won.index(True)}"


@pytest.mark.slow
def test_processes_racing_for_a_lease_have_one_holder(
    store: SqliteRolloutStore, db_path: Path
) -> None:
    taken = race(db_path, "acquire")

    assert sorted(taken) == [False] * (PROCESSES - 1) + [True]
    holder = f"p{taken.index(True)}"
    assert not store.acquire_sync("iris", "someone else", 60.0)
    store.release_sync("iris", holder)
    assert store.acquire_sync("iris", "someone else", 60.0)


@pytest.mark.slow
def test_processes_counting_through_compare_and_set_lose_no_update(
    store: SqliteRolloutStore, db_path: Path
) -> None:
    store.create_sync(running_state())
    per_process = 30

    race(db_path, "count", str(per_process))

    stored = store.get_sync("iris")
    assert stored is not None
    assert stored.figures["n"] == PROCESSES * per_process
    assert stored.revision == 1 + PROCESSES * per_process
