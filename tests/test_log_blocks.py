"""The access log's handler writes lines in blocks: fewer writes, nothing lost, a bounded delay."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from support.wait import wait_for

from mlserve.logs import (
    AccessLog,
    BlockStreamHandler,
    JsonFormatter,
    StderrHandler,
    TextFormatter,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_many_records_are_written_in_few_blocks_and_in_order() -> None:
    stream = CountingStream()
    handler = BlockStreamHandler(stream, flush_s=60, block_bytes=4096)
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler, "test.blocks.many")
    for i in range(1000):
        logger.info("POST /api/predict 200 rid=%d", i)
    handler.close()
    lines = stream.getvalue().splitlines()
    assert [line.rsplit("=", 1)[1] for line in lines] == [str(i) for i in range(1000)]
    assert stream.writes < 30  # one write per ~4 KB block, not one per line


def test_a_lone_record_is_written_within_the_flush_interval() -> None:
    stream = CountingStream()
    handler = BlockStreamHandler(stream, flush_s=0.05)
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler, "test.blocks.lone")
    try:
        logger.info("GET /api/health 200")
        wait_for(lambda: "GET /api/health 200" in stream.getvalue(), "the line written", 10)
    finally:
        handler.close()


def test_close_writes_what_is_pending() -> None:
    stream = CountingStream()
    handler = BlockStreamHandler(stream, flush_s=60)
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler, "test.blocks.close")
    logger.info("last words")
    assert "last words" not in stream.getvalue()
    handler.close()
    assert "last words" in stream.getvalue()


def test_a_stream_closed_under_the_handler_stops_it_quietly() -> None:
    stream = CountingStream()
    handler = BlockStreamHandler(stream, flush_s=60)
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler, "test.blocks.closed")
    logger.info("before")
    stream.close()  # as a test runner closes the stderr it captured
    handler.flush()
    assert handler.stopped.is_set()
    handler.close()


def test_the_stderr_handler_writes_to_the_stderr_of_the_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = StderrHandler()
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler, "test.blocks.stderr")
    logger.warning("one")
    first.close()  # as a test runner closes the stderr it captured
    monkeypatch.setattr(sys, "stderr", second)
    logger.warning("two")
    assert "two" in second.getvalue()


# ---------------------------------------------------------------------------- AccessLog


@pytest.fixture(autouse=True)
def plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's own LogRecord factory, whatever an earlier test in this process installed
    (tracing's adds trace ids, and the access log then goes through logging)."""
    monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)


ACCESS_FMT = "%s %s %d %.1fms rid=%s principal=%s%s"
ACCESS_CASES = [
    ("POST", "/api/predict", 200, 1.25, "0123abcd", "-", " model=sentiment:1"),
    ("GET", "/a%0aINFO%20forged", 401, 0.04, "r1", "-", ""),
    ("GET", "/x\n12:00:00 INFO    mlserve.access: DELETE /api 200", 404, 3.0, "r2", "-", ""),
    ("PUT", "/caf\u00e9/\u2028/\u202e/\x1b[31m/\x7f\x85", 500, 12.345, "r3", "k\u00e9y", ""),
    ("GET", "/100%25", 200, 0.0, "r4", "ci-bot", " model=m\u00fcnchen:7"),
]


def access_fields(case: tuple[object, ...]) -> dict[str, object]:
    method, path, status, ms, rid, principal, model = case
    return {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": ms,
        "request_id": rid,
        "model": model.split("=")[1].split(":")[0] if model else None,
        "version": 1 if model else None,
        "principal": None if principal == "-" else principal,
    }


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_access_log_writes_each_line_exactly_as_its_formatter_would(fmt: str) -> None:
    # The direct path skips the LogRecord; what it writes must not differ by one byte from
    # what the formatter writes for the same record (escapes, JSON field order, timestamps).
    stream = io.StringIO()
    handler = BlockStreamHandler(stream, flush_s=60)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(formatter)
    logger = logger_with(handler, f"test.access.{fmt}")
    moments = [1_764_000_000.123, 1_764_000_000.999, 1_764_000_001.5, 1_764_086_399.0]
    clock = iter(moments * len(ACCESS_CASES))
    access = AccessLog(logger, clock=lambda: next(clock))
    expected = []
    for case in ACCESS_CASES:
        for moment in moments:
            access.info(ACCESS_FMT, *case, fields=access_fields(case))
            record = logger.makeRecord(
                logger.name, logging.INFO, "x", 0, ACCESS_FMT, case, None,
                extra=access_fields(case),
            )  # fmt: skip
            record.created = moment
            expected.append(formatter.format(record))
    handler.close()
    assert stream.getvalue().splitlines() == expected
    assert len(expected) == len(ACCESS_CASES) * len(moments)  # one line each: nothing split


def text_logger(name: str) -> tuple[io.StringIO, BlockStreamHandler, logging.Logger]:
    """A logger set up as `setup_logging` sets up the access log, writing to a string."""
    stream = io.StringIO()
    handler = BlockStreamHandler(stream, flush_s=60)
    handler.setFormatter(TextFormatter())
    return stream, handler, logger_with(handler, name)


def test_the_access_log_writes_directly_when_the_logger_is_as_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream, handler, logger = text_logger("test.access.direct")

    def no_record(*args: object, **kwargs: object) -> None:
        raise AssertionError("a LogRecord was made")

    monkeypatch.setattr(logger, "makeRecord", no_record)
    AccessLog(logger).info(ACCESS_FMT, *ACCESS_CASES[0], fields={})
    handler.close()
    assert stream.getvalue().endswith(
        " INFO    test.access.direct: POST /api/predict 200 1.2ms rid=0123abcd principal=- "
        "model=sentiment:1\n"
    )


def test_the_access_log_goes_through_logging_when_a_filter_a_handler_or_a_factory_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream, handler, logger = text_logger("test.access.fallback")
    access = AccessLog(logger)
    case = ACCESS_CASES[0]

    # A filter of the user's is applied: this one drops health checks and tags the rest.
    def tag(record: logging.LogRecord) -> bool:
        record.msg = "[tagged] " + record.msg
        return "/api/health" not in record.getMessage()

    logger.addFilter(tag)
    access.info(ACCESS_FMT, "GET", "/api/health", 200, 0.1, "h", "-", "", fields={})
    access.info(ACCESS_FMT, *case, fields={})
    logger.removeFilter(tag)
    # A record factory (as tracing installs one) sees every record.
    made: list[str] = []
    default = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = default(*args, **kwargs)
        made.append(record.getMessage())
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", factory)
    access.info(ACCESS_FMT, *case, fields={})
    monkeypatch.setattr(logging, "_logRecordFactory", default)
    # A second handler of the user's gets the record too.
    extra = io.StringIO()
    logger.addHandler(logging.StreamHandler(extra))
    access.info(ACCESS_FMT, *case, fields={})
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "[tagged] POST /api/predict" in lines[0]
    assert "/api/health" not in stream.getvalue()
    assert made == ["POST /api/predict 200 1.2ms rid=0123abcd principal=- model=sentiment:1"]
    assert extra.getvalue() == made[0] + "\n"
