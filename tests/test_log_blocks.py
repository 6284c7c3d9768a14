"""The access log's handler writes lines in blocks: fewer writes, nothing lost, a bounded delay."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from support.wait import wait_for

from mlserve.logs import BlockStreamHandler, StderrHandler, TextFormatter


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
