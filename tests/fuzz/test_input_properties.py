"""Property-based tests of the request parsers and validators, through the predict fast path
(POST /api/predict) and the FastAPI routes (batch, V2 inference, async jobs): whatever the
body, the answer is the prediction or a 4xx in the route's error shape — never a 5xx or a hang.

Hostile text (U+0085, U+2028, NUL, bidi marks, lone surrogates, 1 MB), deep nesting, huge and
non-finite numbers (raw `NaN` / `Infinity` tokens, 10**400 as an integer literal), wrong
types, duplicate keys, invalid UTF-8, truncated bodies and wrong content types."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.data import IRIS_FEATURES, populated_settings

from mlserve.server.app import create_app

MAX_TEXT = 10_000  # server.max_text_length (the default)
MAX_BODY = 1_500_000  # server.max_body_bytes: a 1 MB text fits, a 2 MB one does not
# Seeded by the test's name (derandomize): every run tries the same inputs.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Line and paragraph separators, NUL, bidi controls, a BOM, a zero-width joiner.
SPECIALS = ["\u0085", "\u2028", "\u2029", "\x00", "\u200f", "\u202e", "\u061c", "\ufeff", "\u200d"]
FLOWER = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """sentiment (text) and iris (four named features); jobs are accepted, never run."""
    settings_ = populated_settings(
        tmp_path_factory.mktemp("properties"),
        server={"max_text_length": MAX_TEXT, "max_body_bytes": MAX_BODY},
        jobs={"concurrency": 0, "max_body_bytes": MAX_BODY},
        traffic={"watch_interval_s": 0},
    )
    with TestClient(create_app(settings_), raise_server_exceptions=False) as test_client:
        yield test_client


# ---------------------------------------------------------------------------- the four routes
@dataclass(frozen=True)
class Route:
    """How one route takes a text or a row of features, as raw JSON text."""

    name: str
    text_path: str
    features_path: str
    text_body: Callable[[str], str]
    features_body: Callable[[str], str]
    ok: int = 200
    invalid: int = 422  # the status of invalid input

    @property
    def v2(self) -> bool:
        return self.text_path.startswith("/v2/")


ROUTES = [
    Route(  # the hot path, outside FastAPI
        "fast path",
        "/api/predict",
        "/api/predict",
        lambda v: f'{{"text": {v}, "model": "sentiment"}}',
        lambda v: f'{{"features": {v}, "model": "iris"}}',
    ),
    Route(
        "batch",
        "/api/predict/batch",
        "/api/predict/batch",
        lambda v: f'{{"texts": [{v}], "model": "sentiment"}}',
        lambda v: f'{{"records": [{v}], "model": "iris"}}',
    ),
    Route(
        "v2 infer",
        "/v2/models/sentiment/infer",
        "/v2/models/iris/infer",
        lambda v: (
            f'{{"inputs": [{{"name": "text", "shape": [1], "datatype": "BYTES", "data": [{v}]}}]}}'
        ),
        lambda v: (
            f'{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": {v}}}]}}'
        ),
        invalid=400,  # the Open Inference Protocol's status for invalid requests
    ),
    Route(
        "async job",
        "/api/predict/async",
        "/api/predict/async",
        lambda v: f'{{"text": {v}, "model": "sentiment"}}',
        lambda v: f'{{"features": {v}, "model": "iris"}}',
        ok=202,
    ),
]
JSON = {"content-type": "application/json"}


def post(client: TestClient, path: str, body: str | bytes, headers: dict[str, str] = JSON) -> Any:
    content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.post(path, content=content, headers=headers)


def assert_error_shape(response: Any, *, v2: bool) -> None:
    """{"error": {"code", "message", "request_id"}} on /api, {"error": "..."} on /v2."""
    assert "traceback" not in response.text.lower(), response.text[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    if v2:
        assert isinstance(body["error"], str) and body["error"], body
        return
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}, error
    assert error["message"] and error["code"], error
    assert error["request_id"] == response.headers["x-request-id"]


def assert_answer(response: Any, route: Route, *, valid: bool) -> None:
    """The route's success for valid input; its error status and shape otherwise."""
    status = response.status_code
    assert status < 500, (route.name, status, response.text[:500])
    if valid:
        assert status == route.ok, (route.name, status, response.text[:500])
        return
    assert status == route.invalid, (route.name, status, response.text[:500])
    assert_error_shape(response, v2=route.v2)


def assert_refused(response: Any, route: Route, statuses: set[int]) -> None:
    assert response.status_code in statuses, (route.name, response.status_code, response.text)
    assert_error_shape(response, v2=route.v2)


# ---------------------------------------------------------------------------- text
hostile_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIALS)), max_size=60
) | st.builds(  # around the length limit
    lambda char, n: char * n,
    st.sampled_from([*SPECIALS, "a", "é", "\U0001f600"]),
    st.integers(MAX_TEXT - 2, MAX_TEXT + 2),
)


@PROPERTY
@given(text=hostile_text, escape=st.booleans())
def test_any_text_is_predicted_or_refused_as_blank_or_too_long(
    client: TestClient, text: str, escape: bool
) -> None:
    raw = json.dumps(text, ensure_ascii=escape)  # \uXXXX escapes, or raw UTF-8
    blank = not text or text.isspace()  # nothing to classify: refused like a wrong type
    for route in ROUTES:
        response = post(client, route.text_path, route.text_body(raw))
        assert_answer(response, route, valid=not blank and len(text) <= MAX_TEXT)
        if response.status_code == 200 and not route.v2:
            assert response.json()["model"] == "sentiment"


@PROPERTY
@given(
    text=st.text(max_size=20),
    surrogate=st.integers(0xD800, 0xDFFF),
    position=st.integers(0, 20),
)
def test_lone_surrogate_escapes_never_break_the_server(
    client: TestClient, text: str, surrogate: int, position: int
) -> None:
    """A lone surrogate (\\ud800) is not text: parsers differ on it, none may crash."""
    escaped = json.dumps(text)
    cut = min(position, len(escaped) - 1) or 1
    raw = f"{escaped[:cut]}\\u{surrogate:04x}{escaped[cut:]}"
    for route in ROUTES:
        response = post(client, route.text_path, route.text_body(raw))
        assert response.status_code in (route.ok, route.invalid), response.text
        if response.status_code == route.invalid:
            assert_error_shape(response, v2=route.v2)


SURROGATE_BODIES = [
    ("/api/predict", r'{"text": "x", "model": "\ud800"}'),
    ("/api/predict", r'{"text": "x", "model": "sentiment@\udfff"}'),
    ("/api/predict", r'{"text": "x", "model": "sentiment", "model_version": "\ud800"}'),
    ("/api/predict", r'{"features": {"\ud800": 1}, "model": "iris"}'),
    ("/api/predict", r'{"text": "x", "\ud800": 1}'),
    ("/api/predict/batch", r'{"texts": ["x"], "model": "\ud800"}'),
    ("/api/predict/batch", r'{"records": [{"\ud800": 1}], "model": "iris"}'),
    ("/api/predict/async", r'{"text": "x", "model": "\ud800"}'),
    ("/api/models/iris/traffic", r'{"split": {"\ud800": 100}}'),
    (
        "/v2/models/sentiment/infer",
        r'{"inputs": [{"name": "\ud800", "shape": [1], '
        r'"datatype": "BYTES", "data": ["x"]}]}',
    ),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES)
def test_lone_surrogates_in_any_field_are_invalid_json(
    client: TestClient, path: str, body: str
) -> None:
    """Echoed in an error message, a lone surrogate could not even be encoded: refused as
    malformed JSON before anything reads it."""
    method = client.put if path.endswith("/traffic") else client.post
    response = method(path, content=body.encode(), headers=JSON)
    v2 = path.startswith("/v2/")
    assert response.status_code == (400 if v2 else 422), response.text
    assert_error_shape(response, v2=v2)
    assert "invalid JSON" in response.text


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_1mb_text_is_422_and_a_body_over_the_limit_is_413(
    client: TestClient, route: Route
) -> None:
    for char in ("a", "\u2028"):
        megabyte = json.dumps(char * 1_000_000, ensure_ascii=False)  # 1-3 MB of UTF-8
        response = post(client, route.text_path, route.text_body(megabyte))
        too_big = len(route.text_body(megabyte).encode()) > MAX_BODY
        assert_refused(response, route, {413} if too_big else {route.invalid})
    response = post(client, route.text_path, route.text_body('"' + "b" * 2_000_000 + '"'))
    assert_refused(response, route, {413})


# ---------------------------------------------------------------------------- numbers
NUMBER_TOKENS = [
    "1e308",
    "-1.7976931348623157e308",
    "5e-324",
    "1e-400",  # underflows to 0.0
    "-0",
    "1" + "0" * 300,  # an integer literal that is still a float
    "1" + "0" * 400,  # 10**400: no float holds it
    "-" + "9" * 400,
    "1e309",  # overflows to infinity
    "NaN",
    "Infinity",
    "-Infinity",
]


def _finite(token: str) -> bool:
    value = json.loads(token)  # Python's reader takes NaN / Infinity and big integers
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


@PROPERTY
@given(token=st.sampled_from(NUMBER_TOKENS), column=st.integers(0, 3), named=st.booleans())
def test_huge_and_non_finite_numbers_are_refused_and_finite_ones_predicted(
    client: TestClient, token: str, column: int, named: bool
) -> None:
    values = [json.dumps(v) for v in FLOWER]
    values[column] = token
    as_list = "[" + ", ".join(values) + "]"
    as_object = (
        "{" + ", ".join(f'"{n}": {v}' for n, v in zip(IRIS_FEATURES, values, strict=True)) + "}"
    )
    for route in ROUTES:
        body = route.features_body(as_list if route.v2 or not named else as_object)
        response = post(client, route.features_path, body)
        if not _finite(token):
            assert_answer(response, route, valid=False)
            continue
        # A finite value so far out of range that the model's output overflows is refused
        # too (the model cannot score it); whatever is answered holds real numbers only.
        if response.status_code == route.invalid:
            assert_error_shape(response, v2=route.v2)
            assert "overflow" in response.text
            continue
        assert_answer(response, route, valid=True)
        if route.ok == 200 and not route.v2:
            answer = response.json()
            item = answer["predictions"][0] if "predictions" in answer else answer
            assert isinstance(item["confidence"], float), answer
            assert all(isinstance(p, float) for p in item["probabilities"].values()), answer


# ---------------------------------------------------------------------------- types and shapes
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid_features(value: Any) -> bool:
    """What iris takes: four finite numbers, as a list or by exactly its feature names
    (iris cannot take missing values, so no null)."""
    if isinstance(value, dict):
        if set(value) != set(IRIS_FEATURES):
            return False
        value = [value[n] for n in IRIS_FEATURES]
    return isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))


@PROPERTY
@given(value=json_values | st.lists(json_values, min_size=4, max_size=4))
def test_features_of_any_type_are_predicted_only_when_they_fit(
    client: TestClient, value: Any
) -> None:
    raw = json.dumps(value)
    for route in ROUTES:
        if route.v2:
            data = raw if isinstance(value, list) else f"[{raw}]"
            response = post(client, route.features_path, route.features_body(data))
            flat = isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))
            assert response.status_code in ((200,) if flat else (200, 400)), response.text
            if response.status_code == 400:
                assert_error_shape(response, v2=True)
            continue
        response = post(client, route.features_path, route.features_body(raw))
        assert_answer(response, route, valid=_valid_features(value))


@PROPERTY
@given(value=json_values.filter(lambda v: not isinstance(v, str)))
def test_text_of_any_other_type_is_refused(client: TestClient, value: Any) -> None:
    raw = json.dumps(value)
    for route in ROUTES:
        response = post(client, route.text_path, route.text_body(raw))
        assert_answer(response, route, valid=False)


@PROPERTY
@given(
    field=st.sampled_from(["model", "model_version", "texts", "records", "text", "features"]),
    value=json_values,
    path=st.sampled_from(["/api/predict", "/api/predict/batch", "/api/predict/async"]),
)
def test_any_value_in_any_field_is_never_a_server_error(
    client: TestClient, field: str, value: Any, path: str
) -> None:
    body = json.dumps({field: value})
    response = post(client, path, body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error_shape(response, v2=False)


@PROPERTY
@given(depth=st.integers(1, 200_000), kind=st.sampled_from(["[", '{"a":']), where=st.booleans())
def test_deeply_nested_json_is_refused(
    client: TestClient, depth: int, kind: str, where: bool
) -> None:
    closing = "]" if kind == "[" else "}"
    nested = kind * depth + "1" + closing * depth
    for route in ROUTES:
        if where:  # as the input itself
            path, body = route.features_path, route.features_body(nested)
        else:  # as the whole body
            path, body = route.text_path, nested
        response = post(client, path, body)
        assert_refused(response, route, {route.invalid, 413})


# ---------------------------------------------------------------------------- bytes on the wire
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80",
]


@PROPERTY
@given(
    text=st.text(max_size=30),
    bad=st.sampled_from(INVALID_UTF8),
    position=st.integers(0, 40),
    in_value=st.booleans(),
)
def test_bodies_that_are_not_utf8_are_refused(
    client: TestClient, text: str, bad: bytes, position: int, in_value: bool
) -> None:
    for route in ROUTES:
        body = route.text_body(json.dumps(text, ensure_ascii=False)).encode()
        if in_value:  # inside the text's string
            start = body.index(b'"', body.index(b"[") + 1 if route.v2 else 9) + 1
            at = start + min(position, len(text.encode()))
        else:
            at = min(position, len(body))
        response = post(client, route.text_path, body[:at] + bad + body[at:])
        assert_refused(response, route, {route.invalid})


VALID_BODIES = [
    (route, path, body)
    for route in ROUTES
    for path, body in (
        (route.text_path, route.text_body('"The staff were lovely"')),
        (route.features_path, route.features_body(json.dumps(FLOWER))),
    )
]


@pytest.mark.parametrize(
    ("route", "path", "body"), VALID_BODIES, ids=lambda x: getattr(x, "name", "")
)
def test_every_truncation_of_a_valid_body_is_refused(
    client: TestClient, route: Route, path: str, body: str
) -> None:
    assert post(client, path, body).status_code == route.ok
    for cut in range(len(body)):
        response = post(client, path, body[:cut])
        assert_refused(response, route, {route.invalid})


# ---------------------------------------------------------------------------- JSON semantics
@PROPERTY
@given(first=st.text(max_size=20), last=st.text(max_size=20), spaced=st.booleans())
def test_duplicate_keys_are_refused_on_every_route(
    client: TestClient, first: str, last: str, spaced: bool
) -> None:
    """Parsers disagree on which of two equal keys wins: a body that has them is refused (422;
    V2: 400) on every route, at the top level and inside a nested object, whatever the values."""
    colon = " : " if spaced else ":"
    for route in ROUTES:
        body = route.text_body(json.dumps(first))
        # Repeat a key the body has: "model" on /api, "inputs" on V2 (valid either way).
        again = (
            f'"inputs"{colon}{json.dumps(json.loads(body)["inputs"])}'
            if route.v2
            else f'"model"{colon}{json.dumps(last)}'
        )
        duplicated = body[:-1] + f", {again}}}"
        assert_refused(post(client, route.text_path, duplicated), route, {route.invalid})
        features = f'{{"a": 1, "b": 2, "a"{colon}3, "d": 4}}'
        if not route.v2:  # V2 features are a flat number tensor: no object to nest
            response = post(client, route.features_path, route.features_body(features))
            assert_refused(response, route, {route.invalid})


@PROPERTY
@given(text=st.text(max_size=30).map(lambda t: f'{t}": "{t}" : '))
def test_texts_that_look_like_keys_are_not_duplicates(client: TestClient, text: str) -> None:
    """Quotes and colons inside a text value are content: the body is answered as usual."""
    for route in ROUTES:
        response = post(client, route.text_path, route.text_body(json.dumps(text)))
        assert response.status_code == route.ok, (route.name, response.text[:300])


CONTENT_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/octet-stream",
    "application/jsonx",
    "json",
    "",
]


@PROPERTY
@given(
    content_type=st.sampled_from(CONTENT_TYPES)
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).filter(
        lambda t: "json" not in t.lower() and "multipart" not in t.lower()
    ),
    features=st.booleans(),
)
def test_bodies_without_a_json_content_type_are_refused_on_api_routes(
    client: TestClient, content_type: str, features: bool
) -> None:
    """/api reads JSON only when told so (a text/plain "simple" cross-origin request never
    gets a prediction); V2 reads any body as JSON, as Triton clients expect."""
    # Whitespace alone is no Content-Type at all (HTTP strips a field value's spaces).
    headers = {"content-type": content_type} if content_type.strip() else {}
    for route in ROUTES:
        path = route.features_path if features else route.text_path
        body = route.features_body(json.dumps(FLOWER)) if features else route.text_body('"ok"')
        response = post(client, path, body, headers)
        if route.v2:
            assert response.status_code == 200, response.text
        elif route.ok == 202:  # jobs: JSON (also without a Content-Type), uploads, else 415
            if content_type.strip():
                assert_refused(response, route, {415})
            else:
                assert response.status_code == 202, response.text
        else:
            assert_refused(response, route, {422})
