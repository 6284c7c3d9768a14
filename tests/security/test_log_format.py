"""The log formatters keep every record on its own line whatever a value holds: control
characters, line separators and bidi overrides in a message, an `extra=` field or an exception
are escaped (text) or JSON-escaped, losslessly (JSON). (A real server: test_log_injection.py.)"""

from __future__ import annotations

import json
import logging
import re
import sys

from mlserve.logs import JsonFormatter, TextFormatter, escape_controls

HOSTILE = (
    "x\n12:00:00 INFO    mlserve.access: DELETE /\r\x1b[31m\x85\u2028\u2029\x9b\x7f\x00\u202e\t"
)
TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d ")


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("mlserve.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_escape_controls_writes_each_control_character_as_an_escape() -> None:
    assert escape_controls(HOSTILE) == (
        "x\\n12:00:00 INFO    mlserve.access: DELETE /\\r\\x1b[31m\\x85\\u2028\\u2029\\x9b\\x7f"
        "\\x00\\u202e\\t"
    )
    assert escape_controls("café /api/models/ü 名前") == "café /api/models/ü 名前"


def test_text_record_is_one_line_and_its_traceback_cannot_start_a_record() -> None:
    line = TextFormatter().format(record("path %s", HOSTILE))
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith("path x\\n12:00:00 INFO    mlserve.access: DELETE /\\r\\x1b[31m"
                         "\\x85\\u2028\\u2029\\x9b\\x7f\\x00\\u202e\\t")  # fmt: skip

    text = TextFormatter().format(record("failed on %s", "x", exc=True))
    first, *rest = text.split("\n")
    assert TIMESTAMP.match(first)
    assert rest and all(line.startswith("    ") for line in rest)  # the traceback, indented
    assert rest[0] == "    Traceback (most recent call last):"
    # A newline in the exception's message continues the traceback, indented like it.
    assert rest[-2:] == ["    ValueError: x", "    " + escape_controls(HOSTILE.split("\n")[1])]
    assert text.splitlines() == text.split("\n")


def test_json_record_is_one_line_and_keeps_every_value_exactly() -> None:
    line = JsonFormatter().format(record("path %s", HOSTILE, exc=True, path=HOSTILE, model=HOSTILE))
    assert line.splitlines() == [line]
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]", line)
    data = json.loads(line)
    assert data["path"] == data["model"] == HOSTILE
    assert data["message"] == "path " + HOSTILE
    assert data["exception"].endswith("ValueError: " + HOSTILE)


def test_json_record_drops_uvicorns_ansi_coloured_copy_of_the_message() -> None:
    made = record("Started server process [%d]", 42, color_message="Started [\x1b[36m%d\x1b[0m]")

    data = json.loads(JsonFormatter().format(made))

    assert data["message"] == "Started server process [42]"
    assert "color_message" not in data


def test_text_record_ends_with_the_trace_and_span_ids_when_a_span_was_current() -> None:
    traced = record("GET /api/live 200", trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="x")
    plain = record("GET /api/live 200")

    assert (
        TextFormatter()
        .format(traced)
        .endswith("GET /api/live 200 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=x")
    )
    assert TextFormatter().format(plain).endswith("GET /api/live 200")
