"""The typed client: transport failures and error bodies become typed errors; answers parse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES, iris_estimator
from support.net import free_port

from mlserve.client import AsyncClient, Client
from mlserve.config import load_settings
from mlserve.errors import ServerResponseError, ServerUnreachableError
from mlserve.registry import Registry
from mlserve.schemas import BatchPredictResponse, HealthResponse, ModelList, PredictResponse

URL = "http://mlserve.test:8123"
Handler = Callable[[httpx.Request], httpx.Response]

PREDICTION = {
    "prediction": "pos",
    "confidence": 0.9,
    "probabilities": {"neg": 0.1, "pos": 0.9},
    "model": "sentiment",
    "version": 2,
    "processing_time_ms": 1.5,
    "request_id": "abc",
}


def error_body(code: str, message: str, request_id: str | None = "rid-1") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def sync_client(handler: Handler, **kwargs: Any) -> Client:
    return Client(URL, transport=httpx.MockTransport(handler), **kwargs)


def async_client(handler: Handler, **kwargs: Any) -> AsyncClient:
    return AsyncClient(URL, transport=httpx.MockTransport(handler), **kwargs)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


# ---------------------------------------------------------------------------- transport failures
def test_refused_connection_names_the_url_and_suggests_serve() -> None:
    with sync_client(refuse) as client, pytest.raises(ServerUnreachableError) as info:
        client.predict("hello")
    assert info.value.message == (
        f"cannot reach {URL}: connection refused — is `mlserve serve` running?"
    )
    assert info.value.exit_code == 1


def test_refused_deep_in_the_cause_chain_still_reads_connection_refused() -> None:
    # The async transport (anyio) says "All connection attempts failed" over the real cause.
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except ConnectionRefusedError as exc:
            raise httpx.ConnectError("All connection attempts failed", request=request) from exc

    with sync_client(handler) as client, pytest.raises(ServerUnreachableError) as info:
        client.models()
    assert "connection refused — is `mlserve serve` running?" in info.value.message


def test_other_connect_errors_keep_their_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    with sync_client(handler) as client, pytest.raises(ServerUnreachableError) as info:
        client.live()
    assert "Name or service not known" in info.value.message
    assert "refused" not in info.value.message


def test_timeout_says_no_answer_in_time() -> None:
    with sync_client(time_out) as client, pytest.raises(ServerUnreachableError) as info:
        client.predict("hello")
    assert info.value.message == f"no answer from {URL} in time (ReadTimeout)"


def test_a_real_refused_port_is_reported_as_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=2) as client, pytest.raises(ServerUnreachableError) as info:
        client.ready()
    assert info.value.message == (
        f"cannot reach {url}: connection refused — is `mlserve serve` running?"
    )


def test_a_real_refused_port_is_reported_as_refused_async() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def go() -> None:
        async with AsyncClient(url, timeout=2) as client:
            await client.ready()

    with pytest.raises(ServerUnreachableError) as info:
        asyncio.run(go())
    assert info.value.message == (
        f"cannot reach {url}: connection refused — is `mlserve serve` running?"
    )


# ---------------------------------------------------------------------------- error bodies
@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (404, "model_not_found", "model 'nope' is not served here (serving: iris)"),
        (422, "invalid_input", "'features' has 3 values; model iris:1 expects 4"),
        (500, "prediction_failed", "the model failed to predict; see the server log"),
        (503, "overloaded", "model 'iris' is overloaded, retry later"),
    ],
)
def test_error_body_becomes_server_response_error(status: int, code: str, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=error_body(code, message, "rid-42"))

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.predict(features=[1, 2, 3], model="iris")
    err = info.value
    assert err.status_code == status
    assert err.code == code
    assert err.request_id == "rid-42"
    assert err.message == f"{status} {code}: {message}"
    assert err.exit_code == 1


def test_request_id_falls_back_to_the_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json=error_body("not_found", "no", request_id=None), headers={"X-Request-ID": "h1"}
        )

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.models()
    assert info.value.request_id == "h1"


def test_non_json_error_body_is_shown_on_one_line() -> None:
    page = "<html>\n  <body>\n    <h1>502 Bad Gateway</h1>\n  </body>\n</html>\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=page, headers={"Content-Type": "text/html"})

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.predict("hello")
    err = info.value
    assert err.status_code == 502
    assert err.code == "http_error"
    assert err.request_id is None
    assert "<h1>502 Bad Gateway</h1>" in err.message
    assert "\n" not in err.message


def test_empty_error_body_falls_back_to_the_reason_phrase() -> None:
    with sync_client(lambda r: httpx.Response(401)) as client:
        with pytest.raises(ServerResponseError) as info:
            client.models()
    assert info.value.message == "401 http_error: Unauthorized"


def test_plain_fastapi_detail_is_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.models()
    assert info.value.message == "404 http_error: Not Found"


@pytest.mark.parametrize(
    "body", [b"not json at all", b'{"models": "nope"}', b"[1, 2, 3]"], ids=["text", "shape", "list"]
)
def test_a_success_that_is_not_the_contract_is_a_typed_error(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.models()
    assert info.value.code == "invalid_response"
    assert "is --url an mlserve server?" in info.value.message


@pytest.mark.parametrize("body", [b"<html></html>", b"[1, 2, 3]"], ids=["text", "list"])
def test_an_index_that_is_not_a_json_object_is_a_typed_error(body: bytes) -> None:
    with sync_client(lambda r: httpx.Response(200, content=body)) as client:
        with pytest.raises(ServerResponseError) as info:
            client.index()
    assert info.value.code == "invalid_response"


# ---------------------------------------------------------------------------- probes
def test_ready_treats_503_as_not_ready() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/ready"
        return httpx.Response(503, json={"ready": False, "models": {"iris": "loading"}})

    with sync_client(handler) as client:
        ready, body = client.ready()
    assert ready is False
    assert body is not None and body.models == {"iris": "loading"}


def test_ready_503_without_a_body_is_still_an_answer() -> None:
    with sync_client(lambda r: httpx.Response(503, text="starting")) as client:
        assert client.ready() == (False, None)


def test_ready_200() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ready": True, "models": {"iris": "loaded"}})

    with sync_client(handler) as client:
        ready, body = client.ready()
    assert ready is True
    assert body is not None and body.ready


def test_ready_other_errors_raise() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json=error_body("unauthorized", "missing API key"))

    with sync_client(handler) as client, pytest.raises(ServerResponseError) as info:
        client.ready()
    assert info.value.status_code == 401
    assert "missing API key" in info.value.message


def test_health_503_carries_a_health_body() -> None:
    body = {
        "status": "unhealthy",
        "version": "0.1.0",
        "uptime_s": 1.0,
        "models": [{"name": "iris", "version": None, "status": "degraded", "error": "broken"}],
    }
    with sync_client(lambda r: httpx.Response(503, json=body)) as client:
        health = client.health()
    assert health.status == "unhealthy"
    assert health.models[0].error == "broken"


def test_health_503_from_a_proxy_is_a_server_response_error() -> None:
    with sync_client(lambda r: httpx.Response(503, text="Service Unavailable")) as client:
        with pytest.raises(ServerResponseError) as info:
            client.health()
    assert info.value.status_code == 503


@pytest.mark.parametrize(("status", "alive"), [(200, True), (404, False), (500, False)])
def test_live(status: int, alive: bool) -> None:
    with sync_client(lambda r: httpx.Response(status, json={"live": True})) as client:
        assert client.live() is alive


# ---------------------------------------------------------------------------- requests sent
def test_api_key_is_sent_as_bearer_and_body_as_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PREDICTION)

    with sync_client(handler, api_key="s3cret") as client:
        result = client.predict("hello", model="sentiment@staging")
    assert result == PredictResponse.model_validate(PREDICTION)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{URL}/api/predict"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert json.loads(request.content) == {"text": "hello", "model": "sentiment@staging"}


def test_no_api_key_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"live": True})

    with sync_client(handler) as client:
        client.live()
    assert "Authorization" not in seen[0].headers


def test_api_key_is_added_to_an_injected_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"live": True})

    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    with Client(http=http, api_key="k1") as client:
        client.live()
    assert seen[0].headers["Authorization"] == "Bearer k1"
    assert not http.is_closed  # the caller owns what it passed in
    http.close()


def test_batch_body_holds_texts_or_records() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        n = len(body.get("texts") or body.get("records"))
        item = {"prediction": 1, "confidence": None, "probabilities": None}
        return httpx.Response(
            200,
            json={
                "predictions": [item] * n,
                "model": "m",
                "version": 1,
                "batch_size": n,
                "total_processing_time_ms": 1.0,
                "request_id": "r",
            },
        )

    with sync_client(handler) as client:
        assert client.predict_batch(["a", "b"]).batch_size == 2
        assert client.predict_batch(records=[[1.0, 2.0]], model="m:1").batch_size == 1
    assert bodies == [{"texts": ["a", "b"]}, {"records": [[1.0, 2.0]], "model": "m:1"}]


# ---------------------------------------------------------------------------- async twin
def test_async_refused_and_timeout() -> None:
    async def go(handler: Handler) -> None:
        async with async_client(handler) as client:
            await client.predict("hello")

    with pytest.raises(ServerUnreachableError) as refused:
        asyncio.run(go(refuse))
    assert refused.value.message == (
        f"cannot reach {URL}: connection refused — is `mlserve serve` running?"
    )
    with pytest.raises(ServerUnreachableError) as slow:
        asyncio.run(go(time_out))
    assert slow.value.message == f"no answer from {URL} in time (ReadTimeout)"


def test_async_error_body_and_non_json_body() -> None:
    async def go(handler: Handler) -> None:
        async with async_client(handler) as client:
            await client.predict_batch(["a"], model="nope")

    def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=error_body("model_not_found", "no model 'nope'", "r9"))

    with pytest.raises(ServerResponseError) as info:
        asyncio.run(go(not_found))
    assert (info.value.status_code, info.value.code, info.value.request_id) == (
        404,
        "model_not_found",
        "r9",
    )
    assert "no model 'nope'" in info.value.message

    with pytest.raises(ServerResponseError) as plain:
        asyncio.run(go(lambda r: httpx.Response(500, text="Internal Server Error")))
    assert plain.value.message == "500 http_error: Internal Server Error"


def test_async_ready_503_is_not_ready_and_api_key_is_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"ready": False, "models": {}})

    async def go() -> tuple[bool, Any]:
        async with async_client(handler, api_key="k2") as client:
            return await client.ready()

    ready, body = asyncio.run(go())
    assert ready is False and body is not None and body.models == {}
    assert seen[0].headers["Authorization"] == "Bearer k2"


def test_async_api_key_is_added_to_an_injected_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PREDICTION)

    async def go() -> PredictResponse:
        async with httpx.AsyncClient(base_url=URL, transport=httpx.MockTransport(handler)) as http:
            return await AsyncClient(http=http, api_key="k3").predict("x")

    assert asyncio.run(go()).prediction == "pos"
    assert seen[0].headers["Authorization"] == "Bearer k3"


# ---------------------------------------------------------------------------- a real app
@pytest.fixture
def app_client(tmp_path: Path, text_classifier: Any) -> Iterator[TestClient]:
    """A started app over a tiny text model and an iris model with named features."""
    from mlserve.server.app import create_app

    registry = Registry(tmp_path / "registry")
    registry.register_estimator(text_classifier, name="sentiment", aliases=["production"])
    registry.register_estimator(iris_estimator(), name="iris", feature_names=IRIS_FEATURES)
    settings = load_settings(
        None, home=str(tmp_path / "home"), registry={"path": str(registry.root)}
    )
    with TestClient(create_app(settings)) as http:
        yield http


def test_against_the_app_predict_and_batch_parse(app_client: TestClient) -> None:
    client = Client(http=app_client)
    one = client.predict("good great lovely", model="sentiment")
    assert isinstance(one, PredictResponse)
    assert (one.model, one.version, one.prediction) == ("sentiment", 1, "pos")
    assert one.probabilities is not None and set(one.probabilities) == {"neg", "pos"}
    assert one.confidence == max(one.probabilities.values())

    batch = client.predict_batch(
        records=[[5.1, 3.5, 1.4, 0.2], dict(zip(IRIS_FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))],
        model="iris",
    )
    assert isinstance(batch, BatchPredictResponse)
    assert [p.prediction for p in batch.predictions] == ["setosa", "virginica"]
    assert batch.batch_size == 2


def test_against_the_app_models_and_health_parse(app_client: TestClient) -> None:
    client = Client(http=app_client)
    models = client.models()
    assert isinstance(models, ModelList)
    assert {m.name: m.status for m in models.models} == {"iris": "loaded", "sentiment": "loaded"}
    health = client.health()
    assert isinstance(health, HealthResponse)
    assert health.status == "healthy"
    assert sorted(m.name for m in health.models) == ["iris", "sentiment"]
    assert client.ready()[0] is True
    assert client.live() is True
    assert client.index()["limits"]["max_batch_items"] == 100


def test_against_the_app_errors_carry_the_servers_message(app_client: TestClient) -> None:
    client = Client(http=app_client)
    with pytest.raises(ServerResponseError) as info:
        client.predict(features=[1.0, 2.0, 3.0], model="iris")
    err = info.value
    assert err.status_code == 422
    assert err.code == "invalid_input"
    assert "expects 4" in err.message
    assert err.request_id

    with pytest.raises(ServerResponseError) as missing:
        client.predict("hello", model="nope")
    assert missing.value.status_code == 404
    assert "nope" in missing.value.message
