"""Nothing a client sends can forge or break a log record: a real server with API keys, logging
everything (debug level), in both formats, is sent newlines (%0a, %0d), raw CR/LF, ANSI escapes,
C1 controls, Unicode line separators and bidi overrides in the path, the query, X-Request-ID,
X-Client-ID and model names. Every line of its output is then exactly one record (text: it
starts with the timestamp, access lines have exactly their fields; JSON: it parses), no control
character is written raw, no forged `mlserve.access` record appears, and each access record
names its caller: `-` / null for an anonymous 401, the key's name otherwise (a 403 included).
(Formatter units: tests/security/test_log_format.py.)"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support.data import populate
from support.servers import MlserveProcess, running
from support.wait import wait_for

from mlserve.keys import KeyStore

pytestmark = pytest.mark.slow

# What a forged record would look like in each format; neither method nor principal is ever
# sent for real (no DELETE, no key named "ops").
FORGED_TEXT = (
    "12:00:00 INFO    mlserve.access: DELETE /api/models/iris 200 0.4ms rid=f principal=ops"
)
FORGED_JSON = json.dumps(
    {"time": "2030-01-01T00:00:00.000+00:00", "level": "info", "logger": "mlserve.access",
     "message": "DELETE /api/models/iris 200", "method": "DELETE", "path": "/api/models/iris",
     "status": 200, "request_id": "f", "principal": "ops"}
)  # fmt: skip
# Everything that ends a line somewhere (a terminal, str.splitlines(), a JSON-lines reader) or
# drives a terminal: LF, CR, CRLF, VT, FF, FS/GS/RS, NEL, LS, PS, ESC sequences, CSI (C1),
# DEL, NUL, a bidi override.
BREAKS = [
    "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
    "\x1b[2K\x1b[1G", "\x9b2K", "\x7f", "\x00", "\u202e",
]  # fmt: skip
# Raw (never written to a log): C0 controls, DEL, C1 controls, separators, bidi controls.
UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
TEXT_RECORD = re.compile(
    r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +(?P<logger>[\w.]+): "
)
TEXT_ACCESS = re.compile(
    r"\d\d:\d\d:\d\d INFO +mlserve\.access: (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) "
    r"[\d.]+ms rid=(?P<rid>\S+) principal=(?P<principal>\S+)(?: model=\S+:\d+)?"
)
FLOWER = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Keys:
    predict: str  # named "ci"
    reader: str  # named "reader", role predict: refused (403) on admin routes


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Keys]:
    root = tmp_path_factory.mktemp("log-injection")
    populate(root / "registry")
    store = KeyStore(root / "home" / "state" / "keys.json")
    keys = Keys(
        predict=store.create(role="predict", name="ci").key,
        reader=store.create(role="predict", name="reader").key,
    )
    return root / "registry", root / "home", keys


@pytest.fixture(scope="module", params=["text", "json"])
def server(
    request: pytest.FixtureRequest, registry: tuple[Path, Path, Keys]
) -> Iterator[tuple[MlserveProcess, str]]:
    """A server with auth on (the keys' file in its home), in each log format."""
    root, home, _ = registry
    args = ["--log-format", request.param]
    with running(root, home, args=args, log_level="debug", name=f"serve-{request.param}") as proc:
        yield proc, request.param


def raw_request(port: int, head: bytes, body: bytes = b"") -> int:
    """Send `head` (request line and headers, without the blank line) as bytes; the status
    (0 when the server closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(match.group(1)) if match else 0


def request(
    port: int, method: str, target: str, headers: dict[str, bytes] | None = None,
    body: Any = None,
) -> int:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    payload = b""
    if body is not None:
        payload = json.dumps(body, ensure_ascii=False).encode()
        lines += [b"Content-Type: application/json", f"Content-Length: {len(payload)}".encode()]
    return raw_request(port, b"\r\n".join(lines), payload)


def attack(server: MlserveProcess, keys: Keys) -> dict[str, int]:
    """Every hostile request; named statuses of the ones whose records are checked by id."""
    port = server.port
    key = {"X-API-Key": keys.predict.encode()}
    forged = [b + f for b in BREAKS for f in (FORGED_TEXT, FORGED_JSON)]
    for evil in forged:
        segment = quote(evil, safe="")
        for target in (
            f"/api/models/x{segment}",  # 401: anonymous
            f"/v2/models/x{segment}/infer",
            f"/x{segment}",  # no such route
            f"/api/models?q={segment}",  # a query (not logged)
        ):
            method = "POST" if target.endswith("/infer") else "GET"
            request(port, method, target)
            request(port, method, target, key)
        for header in ("X-Request-ID", "X-Client-ID", "User-Agent"):
            # Header values are bytes: UTF-8 here, read as latin-1 (LS -> "\xe2\x80\xa8").
            value = evil.replace("\r", "").replace("\n", "").encode()
            request(port, "GET", "/api/models", {header: value})
            request(port, "GET", "/api/models", {header: value, **key})
        for body in (
            {"model": f"iris{evil}", "features": FLOWER},  # 404 naming the model
            {"model": evil, "texts": ["good"]},
            {"model": "sentiment", "text": evil},
        ):
            request(port, "POST", "/api/predict", key, body)
            request(port, "POST", "/api/predict/batch", key, body)
    # Raw bytes the HTTP parser may or may not let through (400 or a request).
    for line in (FORGED_TEXT, FORGED_JSON):
        for sep in (b"\r", b"\n", b"\x1b", b"\x85", b"\xe2\x80\xa8", b"\x00"):
            raw_request(port, b"GET /api/models/x" + sep + line.encode() + b" HTTP/1.1\r\nHost: x")
            raw_request(port, b"GET /api/models HTTP/1.1\r\nX-Request-ID: a" + sep + line.encode())
            raw_request(port, b"GET /api/models HTTP/1.1\r\nX-Client-ID: a" + sep + line.encode())
    return {
        "anonymous": request(port, "GET", "/api/models", {"X-Request-ID": b"rid-anonymous"}),
        "ci": request(port, "GET", "/api/models", {"X-Request-ID": b"rid-ci", **key}),
        "refused": request(
            port,
            "POST",
            "/api/models/iris/reload",
            {"X-Request-ID": b"rid-refused", "X-API-Key": keys.reader.encode()},
        ),  # fmt: skip
        "last": request(port, "GET", "/api/models", {"X-Request-ID": b"rid-last", **key}),
    }


def new_output(server: MlserveProcess, start: int) -> str:
    """The server's output since byte `start`, once the last request's record is in it."""
    wait_for(lambda: b"rid-last" in server.log.read_bytes()[start:], "the last record", 30)
    return server.log.read_bytes()[start:].decode("utf-8")


def test_no_client_input_forges_or_breaks_a_log_record(
    server: tuple[MlserveProcess, str], registry: tuple[Path, Path, Keys]
) -> None:
    proc, log_format = server
    start = len(proc.log.read_bytes())  # after the start-up banner
    statuses = attack(proc, registry[2])
    output = new_output(proc, start)
    json_format = log_format == "json"

    assert statuses == {"anonymous": 401, "ci": 200, "refused": 403, "last": 200}
    lines = output.split("\n")
    assert lines.pop() == ""  # the output ends with a complete line
    assert output.splitlines() == lines, "a line separator other than \\n was written"
    raw = sorted({repr(m.group()) for m in UNSAFE.finditer(output)})
    assert not raw, f"control characters written raw: {raw}"

    access: list[dict[str, Any]] = []
    for line in lines:
        if json_format:
            record = json.loads(line)  # every line is one JSON object
            if record["logger"] == "mlserve.access":
                access.append(record)
        else:
            head = TEXT_RECORD.match(line)
            assert head, f"a line that is not a record: {line!r}"
            if head.group("logger") == "mlserve.access":
                match = TEXT_ACCESS.fullmatch(line)
                assert match, f"an access line with other fields: {line!r}"
                fields = match.groupdict()
                principal = None if fields["principal"] == "-" else fields["principal"]
                access.append({**fields, "status": int(fields["status"]),
                               "request_id": fields["rid"], "principal": principal})  # fmt: skip

    assert len(access) > 4 * len(BREAKS)  # the requests that got through are logged
    assert not [r for r in access if r["method"] == "DELETE" or r["principal"] == "ops"]
    by_id = {r["request_id"]: r for r in access}
    assert by_id["rid-anonymous"]["principal"] is None
    assert by_id["rid-ci"]["principal"] == "ci"
    assert by_id["rid-refused"]["status"] == 403 and by_id["rid-refused"]["principal"] == "reader"
    assert all(r["principal"] is None for r in access if r["status"] == 401)
    assert {r["principal"] for r in access if r["status"] != 401} <= {None, "ci", "reader"}
    assert any(r["principal"] == "ci" and r["status"] == 404 for r in access)

    # The hostile path is in the log, escaped (text) or exactly as decoded (JSON).
    evil_path = "/api/models/x\n" + FORGED_TEXT
    if json_format:
        assert any(r["path"] == evil_path for r in access)
    else:
        assert any(r["path"] == "/api/models/x\\n12:00:00%20INFO%20%20%20%20mlserve.access:"
                   "%20DELETE%20/api/models/iris%20200%200.4ms%20rid=f%20principal=ops"
                   for r in access)  # fmt: skip
