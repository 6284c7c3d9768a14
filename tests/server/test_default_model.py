"""A request naming no model goes to the default: server.default_model, else the only served
model, else the only served model taking what the request sends (text or features) — on every
path (fast lane, route, batch, async job); otherwise a 422 names the candidates."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from support.data import FLOWERS, IRIS_FEATURES
from support.data import text_estimator as pos_neg_estimator
from support.wait import wait_for

from mlserve.config import Settings
from mlserve.schemas import ModelMetadata
from mlserve.server.app import create_app

from .conftest import error_of

FLOWER = dict(zip(IRIS_FEATURES, FLOWERS[0], strict=True))  # a setosa
POSITIVE = "I love this product, it works great"
JSON = {"content-type": "application/json"}

# A model whose loading (unpickling) waits until its gate is set: "still loading" on demand.
LOAD_GATES: dict[str, threading.Event] = {}


class SlowToLoad(LogisticRegression):
    """LogisticRegression whose unpickling waits for LOAD_GATES[self.load_gate]."""

    load_gate = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        gate = LOAD_GATES.get(self.load_gate)
        if gate is not None:
            gate.wait(60)


@pytest.fixture(params=["fast lane", "route"])
def start(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., TestClient]]:
    """start(**sections): a started app answering /api/predict through the fast lane, or
    (second run) through the FastAPI route only."""
    with ExitStack() as stack:

        def run(**sections: Any) -> TestClient:
            app = create_app(make_settings(**sections), fast_lane=request.param != "route")
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield run


@pytest.fixture
def reviews_meta(register: Callable[..., ModelMetadata]) -> ModelMetadata:
    """A second text model (pos/neg, where sentiment says positive/negative/neutral)."""
    return register(pos_neg_estimator(), "reviews")


def _predict(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/api/predict", json=body)


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------- one of each kind
@pytest.mark.usefixtures("text_meta", "iris_meta")
def test_text_and_features_each_reach_the_model_taking_them(
    start: Callable[..., TestClient],
) -> None:
    client = start()

    text = _ok(_predict(client, {"text": POSITIVE}))
    features = _ok(_predict(client, {"features": FLOWER}))

    assert (text["model"], text["prediction"]) == ("sentiment", "positive")
    assert (features["model"], features["prediction"]) == ("iris", "setosa")
    assert _ok(_predict(client, {"features": FLOWERS[0]}))["model"] == "iris"  # list form


@pytest.mark.usefixtures("text_meta", "iris_meta")
def test_batches_reach_the_model_taking_their_inputs(serve: Callable[..., TestClient]) -> None:
    client = serve()

    texts = _ok(client.post("/api/predict/batch", json={"texts": [POSITIVE, "It is a box"]}))
    records = _ok(client.post("/api/predict/batch", json={"records": [FLOWER, FLOWERS[1]]}))

    assert texts["model"] == "sentiment"
    assert texts["predictions"][0]["prediction"] == "positive"
    assert records["model"] == "iris"
    assert [p["prediction"] for p in records["predictions"]] == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("body", "model"),
    [
        ({"text": POSITIVE}, "sentiment"),
        ({"texts": [POSITIVE, "Terrible service"]}, "sentiment"),
        ({"features": FLOWER}, "iris"),
        ({"records": [FLOWER, FLOWERS[1]]}, "iris"),
    ],
    ids=["text", "texts", "features", "records"],
)
@pytest.mark.usefixtures("text_meta", "iris_meta")
def test_async_jobs_reach_the_model_taking_their_inputs(
    serve: Callable[..., TestClient], body: dict[str, Any], model: str
) -> None:
    client = serve()

    response = client.post("/api/predict/async", json=body)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["model"] == model
    wait_for(
        lambda: client.get(accepted["status_url"]).json()["status"] == "completed",
        "the job to complete",
        30,
    )
    result = client.get(accepted["result_url"]).json()
    first = result["predictions"][0]["prediction"]
    assert first == ("positive" if model == "sentiment" else "setosa")


@pytest.mark.parametrize(
    ("filename", "content", "model"),
    [
        ("texts.csv", f'id,text\n1,"{POSITIVE}"\n', "sentiment"),
        ("rows.csv", ",".join(IRIS_FEATURES) + "\n5.1,3.5,1.4,0.2\n", "iris"),
        ("texts.jsonl", f'\n{{"text": "{POSITIVE}"}}\n', "sentiment"),
        ("rows.jsonl", '{"features": [5.1, 3.5, 1.4, 0.2]}\n', "iris"),
    ],
    ids=["csv-text", "csv-features", "jsonl-text", "jsonl-features"],
)
@pytest.mark.usefixtures("text_meta", "iris_meta")
def test_uploaded_jobs_reach_the_model_taking_their_inputs(
    serve: Callable[..., TestClient], filename: str, content: str, model: str
) -> None:
    client = serve()

    response = client.post(
        "/api/predict/async", files={"file": (filename, io.BytesIO(content.encode()))}
    )

    assert response.status_code == 202, response.text
    assert response.json()["model"] == model


@pytest.mark.usefixtures("iris_meta")
def test_an_ab_split_of_the_default_model_applies_to_requests_naming_none(
    text_meta: ModelMetadata,
    register: Callable[..., ModelMetadata],
    text_estimator: Any,
    serve: Callable[..., TestClient],
) -> None:
    register(text_estimator, "sentiment", aliases=[])  # v2; production stays on v1
    client = serve(traffic={"splits": {"sentiment": {"1": 0, "2": 100}}})

    text = _ok(_predict(client, {"text": POSITIVE}))
    batch = _ok(client.post("/api/predict/batch", json={"texts": [POSITIVE]}))

    assert (text["model"], text["version"]) == ("sentiment", 2)
    assert (batch["model"], batch["version"]) == ("sentiment", 2)
    assert _ok(_predict(client, {"features": FLOWER}))["model"] == "iris"


# ---------------------------------------------------------------------------- ambiguous
@pytest.mark.usefixtures("text_meta", "reviews_meta", "iris_meta")
def test_two_text_models_make_text_requests_name_one(start: Callable[..., TestClient]) -> None:
    client = start()

    error = error_of(_predict(client, {"text": POSITIVE}), 422, "invalid_input")

    message = error["message"]
    assert message.startswith("'model' is required: 2 served models take text")
    for fragment in ("(reviews, sentiment)", "server.default_model", "--model"):
        assert fragment in message
    assert "iris" not in message  # not a candidate for text
    # Features still have one taker, and naming the model still works.
    assert _ok(_predict(client, {"features": FLOWER}))["model"] == "iris"
    assert _ok(_predict(client, {"text": POSITIVE, "model": "reviews"}))["prediction"] == "pos"


@pytest.mark.usefixtures("text_meta", "reviews_meta", "iris_meta")
def test_two_text_models_make_text_batches_and_jobs_name_one(
    serve: Callable[..., TestClient],
) -> None:
    client = serve(raise_server_exceptions=False)

    for path, body in [
        ("/api/predict/batch", {"texts": [POSITIVE]}),
        ("/api/predict/async", {"text": POSITIVE}),
        ("/api/predict/async", {"texts": [POSITIVE]}),
    ]:
        error = error_of(client.post(path, json=body), 422, "invalid_input")
        assert "2 served models take text (reviews, sentiment)" in error["message"], path
    upload = client.post(
        "/api/predict/async", files={"file": ("t.csv", io.BytesIO(b"text\nhello\n"))}
    )
    assert "(reviews, sentiment)" in error_of(upload, 422, "invalid_input")["message"]
    records = client.post("/api/predict/batch", json={"records": [FLOWER]})
    assert _ok(records)["model"] == "iris"


@pytest.mark.usefixtures("text_meta", "reviews_meta", "iris_meta")
def test_server_default_model_settles_it(start: Callable[..., TestClient]) -> None:
    client = start(server={"default_model": "reviews"})

    assert _ok(_predict(client, {"text": POSITIVE}))["model"] == "reviews"
    # The setting names the model of every request naming none: features go there too.
    error = error_of(_predict(client, {"features": FLOWER}), 422, "invalid_input")
    assert "'model' is required" not in error["message"]


@pytest.mark.usefixtures("iris_meta")
def test_text_to_a_server_with_only_tabular_models_names_them(
    register: Callable[..., ModelMetadata],
    regression_estimator: Any,
    start: Callable[..., TestClient],
) -> None:
    register(regression_estimator, "petal", feature_names=IRIS_FEATURES[:3])
    client = start()

    error = error_of(_predict(client, {"text": POSITIVE}), 422, "invalid_input")

    assert error["message"].startswith(
        "'model' is required: no served model takes text (serving: iris, petal)"
    )


@pytest.mark.usefixtures("iris_meta")
def test_the_only_served_model_answers_whatever_is_sent(start: Callable[..., TestClient]) -> None:
    client = start()

    error = error_of(_predict(client, {"text": POSITIVE}), 422, "invalid_input")

    # The model itself says what it takes: the request reached it.
    assert "'model' is required" not in error["message"]
    assert "features" in error["message"]


@pytest.mark.parametrize("body", [{}, {"text": POSITIVE, "features": FLOWER}])
@pytest.mark.usefixtures("text_meta", "reviews_meta", "iris_meta")
def test_neither_or_both_inputs_say_so_before_any_model_is_chosen(
    start: Callable[..., TestClient], body: dict[str, Any]
) -> None:
    client = start()

    error = error_of(_predict(client, body), 422, "invalid_input")

    assert error["message"] == "send exactly one of 'text' or 'features'"


# ---------------------------------------------------------------------------- nothing served
def test_a_server_without_models_says_no_models_are_served(
    start: Callable[..., TestClient],
) -> None:
    client = start()

    for path, body in [
        ("/api/predict", {"text": POSITIVE}),
        ("/api/predict", {"features": FLOWER}),
        ("/api/predict/batch", {"texts": [POSITIVE]}),
        ("/api/predict/async", {"records": [FLOWER]}),
    ]:
        error = error_of(client.post(path, json=body), 503, "model_unavailable")
        assert error["message"].startswith("no models are served: register one"), path
        assert "several" not in error["message"]


# ---------------------------------------------------------------------------- still loading
@pytest.fixture
def load_gate() -> Iterator[tuple[str, threading.Event]]:
    """(name, event): a SlowToLoad with load_gate = name loads once the event is set (set at
    the end of the test whatever happened, so the server can stop)."""
    name = uuid.uuid4().hex
    LOAD_GATES[name] = gate = threading.Event()
    yield name, gate
    gate.set()
    LOAD_GATES.pop(name, None)


def test_models_not_loaded_yet_count_by_what_the_registry_says_they_take(
    register: Callable[..., ModelMetadata],
    iris: tuple[Any, Any],
    text_estimator: Any,
    reviews_meta: ModelMetadata,
    load_gate: tuple[str, threading.Event],
    make_settings: Callable[..., Settings],
) -> None:
    name, gate = load_gate
    slow = SlowToLoad(max_iter=1000).fit(*iris)
    slow.load_gate = name
    # Loaded in name order: "early" holds the loading, so no model is loaded yet.
    register(slow, "early", feature_names=IRIS_FEATURES)
    register(text_estimator, "sentiment")
    app = create_app(make_settings(), background_load=True)  # liveness before loading
    with TestClient(app, raise_server_exceptions=False) as client:
        try:
            loading = {"early": "loading", "reviews": "loading", "sentiment": "loading"}
            wait_for(
                lambda: client.get("/api/ready").json()["models"] == loading,
                "every model listed, none loaded",
            )

            text = error_of(_predict(client, {"text": POSITIVE}), 422, "invalid_input")
            features = error_of(_predict(client, {"features": FLOWER}), 503, "model_unavailable")

            assert "2 served models take text (reviews, sentiment)" in text["message"]
            assert features["message"] == "model 'early' is not loaded yet"
        finally:
            gate.set()

        wait_for(lambda: _predict(client, {"features": FLOWER}).status_code == 200, "loading")
        assert _predict(client, {"features": FLOWER}).json()["model"] == "early"
        again = _predict(client, {"text": POSITIVE}).json()["error"]["message"]
        assert "(reviews, sentiment)" in again
