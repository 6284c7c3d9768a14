"""DatabaseErrors: a SQLite store's database that cannot be read or written becomes the store's
own error (a 503) saying why (a full disk, a lock, read-only...), with the cause in the store's
log, never in the client's answer; the job and rollout stores' exact wording."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest
from support.rollouts import running_state

from mlserve.backends.sqlite import DatabaseErrors, SqliteDatabase
from mlserve.errors import MlserveError
from mlserve.jobs import JobsUnavailableError
from mlserve.jobs.sqlite import SqliteJobStore
from mlserve.rollouts import RolloutsUnavailableError
from mlserve.rollouts.sqlite import SqliteRolloutStore

LOGGER = "tests.sqlite_errors"


class StoreDownError(MlserveError):
    pass


ERRORS = DatabaseErrors(
    what="test store",
    message="tests are unavailable: the test store {why}",
    error=StoreDownError,
    log=logging.getLogger(LOGGER),
)


def sqlite_error(name: str, message: str = "boom") -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name  # what SQLite sets on its own errors
    return error


def raised_while_handling(error: BaseException, handled: BaseException) -> BaseException:
    """`error` raised inside an `except` for `handled` (so chained to it as its context)."""
    try:
        try:
            raise handled
        except BaseException:  # noqa: BLE001
            raise error  # noqa: B904 - the implicit context is the point
    except BaseException as exc:  # noqa: BLE001
        return exc


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (
            sqlite_error("SQLITE_FULL", "database or disk is full"),
            "has no room left: its disk is full",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "has no room left: its disk is full"),
        (sqlite_error("SQLITE_BUSY", "database is locked"), "is busy (locked by another process)"),
        (sqlite_error("SQLITE_LOCKED"), "is busy (locked by another process)"),
        (sqlite_error("SQLITE_READONLY"), "is read-only"),
        (OSError(errno.EROFS, "Read-only file system"), "is read-only"),
        (sqlite_error("SQLITE_IOERR"), "failed (SQLITE_IOERR)"),
        (sqlite3.OperationalError("unable to open database file"), "failed (OperationalError)"),
        (PermissionError(errno.EACCES, "Permission denied"), "failed (PermissionError)"),
    ],
)
def test_the_error_says_why_and_the_log_has_the_cause(
    error: BaseException, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        translated = ERRORS.unavailable(error)

    assert type(translated) is StoreDownError
    assert translated.message == f"tests are unavailable: the test store {why}"
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == f"the test store {why}: {type(error).__name__}: {error}"


def test_a_cause_chained_below_is_found_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    full = sqlite_error("SQLITE_FULL", "database or disk is full")
    error = raised_while_handling(sqlite3.OperationalError("something went wrong"), full)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        translated = ERRORS.unavailable(error)

    assert (
        translated.message
        == "tests are unavailable: the test store has no room left: its disk is full"
    )
    assert caplog.records[-1].getMessage().endswith("OperationalError: database or disk is full")


def test_the_error_that_says_why_is_logged_not_the_one_below_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # mkdir(parents=True) on a read-only disk: the read-only error is raised while handling
    # the FileNotFoundError of the missing folder below it.
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/ro/a/b")
    error = raised_while_handling(OSError(errno.EROFS, "Read-only file system", "/ro/a"), missing)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        translated = ERRORS.unavailable(error)

    assert translated.message.endswith("the test store is read-only")
    assert caplog.records[-1].getMessage() == (
        "the test store is read-only: OSError: [Errno 30] Read-only file system: '/ro/a'"
    )


def test_guarded_translates_operational_errors_only() -> None:
    @ERRORS.guarded
    def fails(error: BaseException) -> None:
        """Raises `error`."""
        raise error

    assert fails.__name__ == "fails" and fails.__doc__ == "Raises `error`."
    with pytest.raises(StoreDownError, match="is busy") as raised:
        fails(sqlite_error("SQLITE_BUSY"))
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(StoreDownError, match="has no room left"):
        fails(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(sqlite3.IntegrityError):  # a bug or a conflict, not an outage
        fails(sqlite3.IntegrityError("UNIQUE constraint failed"))
    with pytest.raises(ValueError, match="bad"):
        fails(ValueError("bad"))


def test_a_write_lock_held_too_long_is_busy(tmp_path: Path) -> None:
    database = SqliteDatabase(
        tmp_path / "busy.sqlite3",
        what="test store",
        busy_timeout_s=0.05,
        synchronous="NORMAL",
        closed_error=lambda: MlserveError("closed"),
    )
    database.create_schema("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY)", 1)
    holder = sqlite3.connect(tmp_path / "busy.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock

        @ERRORS.guarded
        def write() -> None:
            with database.transaction() as db:
                db.execute("INSERT INTO rows (id) VALUES (1)")

        with pytest.raises(StoreDownError, match=r"the test store is busy \(locked by"):
            write()
    finally:
        holder.close()
        database.close()


def fill_up(db: sqlite3.Connection) -> None:
    """No write that needs a new page succeeds on `db` from now on (SQLITE_FULL)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {int(pages)}")


def test_the_job_store_wording(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.initialize()
    try:
        fill_up(store._db.connection())  # this thread's: the *_sync call below runs on it
        with (
            caplog.at_level(logging.ERROR, logger="mlserve.jobs.sqlite"),
            pytest.raises(JobsUnavailableError) as raised,
        ):
            store.submit_sync(
                model_reference=None, model="m", version=1, kind="texts", inputs=["x" * 100_000]
            )
    finally:
        store.close_sync()

    assert raised.value.message == (
        "async jobs are unavailable: the job store has no room left: its disk is full; "
        "try again later"
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "mlserve.jobs.sqlite"]
    assert logged == [
        "the job store has no room left: its disk is full: OperationalError: "
        "database or disk is full"
    ]


def test_the_rollout_store_wording(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rollouts.sqlite3"
    store = SqliteRolloutStore(path, busy_timeout_s=0.05)
    store.initialize()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with (
            caplog.at_level(logging.ERROR, logger="mlserve.rollouts.sqlite"),
            pytest.raises(RolloutsUnavailableError) as raised,
        ):
            store.create_sync(running_state())
    finally:
        holder.close()
        store.close_sync()

    assert raised.value.message == (
        "rollouts are unavailable: the rollout store is busy (locked by another process)"
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "mlserve.rollouts.sqlite"]
    assert logged == [
        "the rollout store is busy (locked by another process): OperationalError: "
        "database is locked"
    ]
