"""Logging setup shared by the CLI and the server: readable text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AccessLog",
    "BlockStreamHandler",
    "StderrHandler",
    "JsonFormatter",
    "TextFormatter",
    "escape_controls",
    "setup_logging",
]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Record attributes that are not fields of a JSON record: the standard ones, and uvicorn's
# `color_message` (the message again, with ANSI colour codes for a terminal).
_NOT_FIELDS = frozenset(_STANDARD | {"color_message"})

# What a logged value must not carry raw, as it would end a line (forging the records after it)
# or drive the terminal or viewer that shows the log: C0 controls, DEL, C1 controls (NEL, CSI),
# the Unicode line and paragraph separators (str.splitlines() splits there), and the
# bidirectional marks, embeddings, overrides and isolates that reorder text on screen.
_BIDI = "\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
# JSON escapes C0 controls itself (ensure_ascii=False keeps everything above them raw).
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f\u2028\u2029{_BIDI}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Continuation lines of a text record (a traceback, a stack) start with this, never with a
# timestamp: a record is its first line and the indented lines after it.
CONTINUATION = "    "


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`):
    it stays on one line and cannot move the cursor, recolour or reorder what a terminal shows.
    Backslashes are left as they are: an escape is for reading, not for decoding."""
    if text.isascii() and text.isprintable():  # the common case, checked in C
        return text
    return _UNSAFE.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any `extra=` fields merged in; a control or line
    separator character in any string is a JSON escape (the value is kept exactly)."""

    def format(self, record: logging.LogRecord) -> str:
        data = json_head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _NOT_FIELDS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json_line(data)


def json_head(created: float, levelname: str, name: str, message: str) -> dict[str, Any]:
    """The first fields of a JSON record (a record's own fields follow them)."""
    return {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": levelname.lower(),
        "logger": name,
        "message": message,
    }


def json_line(data: dict[str, Any]) -> str:
    text = json.dumps(data, default=str, ensure_ascii=False)
    # Only inside strings can these characters occur: \uXXXX is valid there and decodes to
    # the same value, while the line itself stays one line on every reader.
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


def text_line(clock: str, levelname: str, name: str, message: str) -> str:
    """The first line of a text record: `HH:MM:SS LEVEL logger: message`, escaped."""
    return f"{clock} {levelname:<7} {escape_controls(name)}: {escape_controls(message)}"


class TextFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL logger: message` on one line, control characters in the message escaped;
    a traceback or stack follows on lines indented by four spaces (escaped the same way), so
    every line that starts with a timestamp starts a record and nothing a client sends can
    start one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        first = text_line(
            self.formatTime(record, self.datefmt), record.levelname, record.name,
            record.getMessage(),
        )  # fmt: skip
        trace_id = record.__dict__.get("trace_id")  # set while a span is current (tracing)
        if trace_id is not None:
            ids = f" trace_id={trace_id} span_id={record.__dict__.get('span_id')}"
            first += escape_controls(ids)
        lines = [first]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if block:
                lines.extend(CONTINUATION + escape_controls(line) for line in block.split("\n"))
        return "\n".join(lines)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler writing to `sys.stderr` as it is when each record is written, not as it
    was when logging was set up: a command run in-process (a test runner's captured stderr,
    later closed) does not leave the handler bound to a dead stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


class BlockStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler for a high-rate logger (the access log): records are written in blocks,
    one write per block rather than one per line, at most `flush_s` after they were logged,
    at once past `block_bytes`, and at close (interpreter exit, a graceful shutdown). A killed
    process loses at most the last `flush_s` of lines."""

    def __init__(self, stream: Any, *, flush_s: float = 0.1, block_bytes: int = 65536) -> None:
        super().__init__(stream)
        self.flush_s = flush_s
        self.block_bytes = block_bytes
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.stopped = threading.Event()
        self.flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        self._append(line)

    def write_line(self, line: str) -> None:
        """Add a line that is already formatted (the access log's direct path)."""
        with self.lock:  # type: ignore[union-attr]
            self._append(line)

    def _append(self, line: str) -> None:
        self.pending.append(line)
        self.pending_bytes += len(line) + 1
        if self.pending_bytes >= self.block_bytes:
            self._write()
        elif self.flusher is None:
            self.flusher = threading.Thread(
                target=self._flush_periodically, name="log-flush", daemon=True
            )
            self.flusher.start()

    def _write(self) -> None:
        if not self.pending:
            return
        block = "\n".join(self.pending) + "\n"
        self.pending.clear()
        self.pending_bytes = 0
        if getattr(self.stream, "closed", False):
            # The stream was closed under us (a test runner's captured stderr, a shutdown):
            # nothing can be written to it any more; stop rather than report every block.
            self.stopped.set()
            return
        try:
            self.stream.write(block)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a full or broken stream: as StreamHandler does
            self.handleError(logging.makeLogRecord({"msg": "access log write failed"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _flush_periodically(self) -> None:
        while not self.stopped.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        self.stopped.set()
        self.flush()
        super().close()


def setup_logging(*, level: str = "info", fmt: str = "text", verbose: bool = False) -> None:
    """Configure the `mlserve` and `uvicorn` loggers to write to stderr; the access log
    (`mlserve.access`, one record per request) in blocks (BlockStreamHandler). In JSON, Python
    warnings are log records too (`py.warnings`), so that every line written is JSON."""
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = StderrHandler()
    handler.setFormatter(formatter)
    numeric = logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO)
    names = ["mlserve", "uvicorn", "uvicorn.error"]
    if fmt == "json":
        logging.captureWarnings(True)
        names.append("py.warnings")
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(numeric)
        logger.propagate = False
    access = logging.getLogger("mlserve.access")
    for old in access.handlers:
        old.close()
    blocks = BlockStreamHandler(sys.stderr)
    blocks.setFormatter(formatter)
    access.handlers[:] = [blocks]
    access.setLevel(numeric)
    access.propagate = False


class AccessLog:
    """Writes the access log's records (one per request) to `logger` (`mlserve.access`).

    When the logger is as `setup_logging` left it (one BlockStreamHandler with the text or
    JSON formatter, no filters, no record factory such as tracing's, not propagating), the
    line is formatted here, exactly as that formatter would write the record, and added to the
    handler's block: no LogRecord and no trip through the logging machinery, ~8 µs a request
    less (a fifth of single-text throughput at 64 connections; docs/benchmarks.md). Otherwise
    (a handler or filter of the user's, tracing on) the record goes through `logger.info`."""

    __slots__ = ("_clock", "_second", "_time", "clock", "logger")

    def __init__(self, logger: logging.Logger, *, clock: Callable[[], float] = time.time) -> None:
        self.logger = logger
        self.clock = clock
        self._second = -1
        self._time = ""

    def info(self, fmt: str, *args: Any, fields: dict[str, Any]) -> None:
        """Log `fmt % args` at INFO with `fields` (the JSON record's extra keys)."""
        handler = self._direct()
        if handler is None:
            self.logger.info(fmt, *args, extra=fields)
            return
        message = fmt % args
        now = self.clock()
        if type(handler.formatter) is TextFormatter:
            second = int(now)
            if second != self._second:  # the formatter's "%H:%M:%S" of local time
                self._second = second
                self._time = time.strftime("%H:%M:%S", time.localtime(now))
            handler.write_line(text_line(self._time, "INFO", self.logger.name, message))
            return
        data = json_head(now, "INFO", self.logger.name, message)
        data.update(fields)
        handler.write_line(json_line(data))

    def _direct(self) -> BlockStreamHandler | None:
        logger = self.logger
        handlers = logger.handlers
        if len(handlers) != 1 or logger.filters or logger.propagate or logger.disabled:
            return None
        handler = handlers[0]
        if (
            type(handler) is not BlockStreamHandler
            or type(handler.formatter) not in (TextFormatter, JsonFormatter)
            or handler.filters
            or handler.level > logging.INFO
            or logging.getLogRecordFactory() is not logging.LogRecord
        ):
            return None
        return handler
