"""SqliteDatabase's transactions when a write fails: the error raised is the write's own (a
full disk stays a full disk, not the "no transaction is active" of the ROLLBACK that follows
SQLite's automatic one), nothing of the transaction is left written, and the thread's
connection is usable again. The database is made really full by capping its pages
(`PRAGMA max_page_count`: SQLite's own SQLITE_FULL, what it reports on ENOSPC)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from support.rollouts import counts, running_state

from mlserve.backends.sqlite import SqliteDatabase
from mlserve.errors import MlserveError
from mlserve.rollouts import RolloutsUnavailableError
from mlserve.rollouts.sqlite import SqliteRolloutStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS parents (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS children (
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED
);
"""
BIG = b"x" * 200_000  # far more than one page


@pytest.fixture
def database(tmp_path: Path) -> SqliteDatabase:
    database = SqliteDatabase(
        tmp_path / "state" / "test.sqlite3",
        what="test store",
        busy_timeout_s=1.0,
        synchronous="NORMAL",
        closed_error=lambda: MlserveError("closed"),
    )
    database.create_schema(SCHEMA, 1)
    yield database
    database.close()


def fill_up(db: sqlite3.Connection) -> None:
    """No write that needs a new page succeeds on `db` from now on (SQLITE_FULL)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {int(pages)}")


def stored(database: SqliteDatabase) -> int:
    count: int = database.connection().execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    return count


def test_a_write_on_a_full_database_raises_the_full_disk_error_and_leaves_nothing_written(
    database: SqliteDatabase,
) -> None:
    fill_up(database.connection())

    with pytest.raises(sqlite3.OperationalError) as raised:  # noqa: PT012 - a transaction
        with database.transaction() as db:
            db.execute("INSERT INTO rows (id, data) VALUES (1, x'00')")  # fits in its page
            db.execute("INSERT INTO rows (id, data) VALUES (2, ?)", (BIG,))

    assert raised.value.sqlite_errorname == "SQLITE_FULL", raised.value
    assert str(raised.value) == "database or disk is full"
    assert stored(database) == 0  # the small row went with the transaction
    database.connection().execute("PRAGMA max_page_count = 1073741823")  # room again
    with database.transaction() as db:  # the same thread's connection writes again
        db.execute("INSERT INTO rows (id, data) VALUES (3, ?)", (BIG,))
    assert stored(database) == 1


def test_a_commit_that_fails_is_rolled_back_and_the_connection_writes_again(
    database: SqliteDatabase,
) -> None:
    database.connection().execute("PRAGMA foreign_keys = ON")

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # noqa: PT012
        with database.transaction() as db:  # the deferred key is checked at COMMIT
            db.execute("INSERT INTO rows (id, data) VALUES (1, x'00')")
            db.execute("INSERT INTO children (id, parent) VALUES (1, 42)")

    assert not database.connection().in_transaction
    assert stored(database) == 0
    with database.transaction() as db:  # not "cannot start a transaction within a transaction"
        db.execute("INSERT INTO rows (id, data) VALUES (2, x'00')")
    assert stored(database) == 1


def test_a_rollout_store_on_a_full_disk_is_unavailable_and_logs_the_full_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteRolloutStore(tmp_path / "rollouts.sqlite3")
    store.initialize()
    try:
        rollout = store.create_sync(running_state())
        fill_up(store._db.connection())  # this thread's: the *_sync calls below run on it
        windows = [(rollout.id, step, 1, counts(10, errors=1)) for step in range(3000)]

        with caplog.at_level(logging.ERROR), pytest.raises(RolloutsUnavailableError) as raised:
            store.add_windows_sync(windows)

        assert "disk is full" in raised.value.message
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "database or disk is full" in logged, logged
        assert "cannot rollback" not in logged, logged
        assert store.windows_sync(rollout.id, 0) == {}  # none of the rows went in
    finally:
        store.close_sync()
