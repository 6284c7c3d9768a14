"""Typed HTTP client for a running mlserve server (sync and async), built on httpx.

The transport is injectable: pass `transport=httpx.MockTransport(...)` or an `httpx.Client`
(e.g. FastAPI's TestClient) in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from mlserve.errors import ServerResponseError, ServerUnreachableError
from mlserve.schemas import (
    BatchPredictResponse,
    CompareResponse,
    FeedbackResponse,
    FeedbackResult,
    HealthResponse,
    Label,
    ModelList,
    PredictResponse,
    QualityReport,
    ReadyResponse,
    RolloutInfo,
    RolloutRequest,
)

DEFAULT_URL = "http://127.0.0.1:8000"


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "mlserve-client"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _predict_body(text: str | None, features: Any, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if text is not None:
        body["text"] = text
    if features is not None:
        body["features"] = features
    if model is not None:
        body["model"] = model
    return body


def _batch_body(
    texts: Sequence[str] | None, records: Sequence[Any] | None, model: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if texts is not None:
        body["texts"] = list(texts)
    if records is not None:
        body["records"] = list(records)
    if model is not None:
        body["model"] = model
    return body


def _compare_body(text: str | None, features: Any, models: Sequence[str]) -> dict[str, Any]:
    body = _predict_body(text, features, None)
    body["models"] = list(models)
    return body


def _feedback_body(items: Iterable[tuple[str, Label]]) -> dict[str, Any]:
    return {"items": [{"request_id": rid, "label": label} for rid, label in items]}


def _quality_params(version: int | None, window: int | None) -> dict[str, int]:
    params = {}
    if version is not None:
        params["version"] = version
    if window is not None:
        params["window"] = window
    return params


def _rollout_path(name: str) -> str:
    return f"/api/models/{quote(name, safe='')}/rollout"


def _rollout_body(request: RolloutRequest) -> dict[str, Any]:
    # Only what the caller set: the server fills in its own defaults (the alias above all).
    return request.model_dump(mode="json", exclude_unset=True)


def _one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace (an HTML error page, a traceback) into one short line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def raise_for_error(response: httpx.Response) -> None:
    """Turn a non-2xx response into ServerResponseError with the server's own message."""
    if response.is_success:
        return
    code, message = "http_error", ""
    request_id: str | None = response.headers.get("x-request-id")
    try:
        data = response.json()
    except ValueError:  # not JSON: a proxy's page, a plain-text error
        message = _one_line(response.text)
    else:
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = _one_line(str(err.get("message") or ""))
            if err.get("request_id"):
                request_id = str(err["request_id"])
        elif isinstance(err, str):  # the V2 protocol's shape
            message = _one_line(err)
        elif isinstance(data, dict) and isinstance(data.get("detail"), str):  # plain FastAPI
            message = _one_line(data["detail"])
    message = message or response.reason_phrase or "error"
    raise ServerResponseError(
        f"{response.status_code} {code}: {message}",
        status=response.status_code,
        code=code,
        request_id=request_id,
    )


def _decode(response: httpx.Response) -> Any:
    """The JSON body of a successful response; anything else is a typed error, not a crash."""
    raise_for_error(response)
    try:
        return response.json()
    except ValueError:
        raise _unexpected(response, "a body that is not JSON") from None


M = TypeVar("M", bound=BaseModel)


def _parse(schema: type[M], data: Any, response: httpx.Response) -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise _unexpected(
            response, f"a body that is not a {schema.__name__} ({where}: {first['msg']})"
        ) from None


def _unexpected(response: httpx.Response, what: str) -> ServerResponseError:
    return ServerResponseError(
        f"{response.request.url} answered {response.status_code} with {what}; "
        "is --url an mlserve server?",
        status=response.status_code,
        code="invalid_response",
        request_id=response.headers.get("x-request-id"),
    )


def _refused(exc: BaseException) -> bool:
    """True when the connection was refused somewhere down the cause chain (anyio, used by the
    async transport, reports 'All connection attempts failed' over the ConnectionRefusedError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or "refused" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def _unreachable(url: str, exc: httpx.TransportError) -> ServerUnreachableError:
    if isinstance(exc, httpx.TimeoutException):
        return ServerUnreachableError(f"no answer from {url} in time ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if _refused(exc) else (str(exc) or "cannot connect")
        return ServerUnreachableError(f"cannot reach {url}: {reason} — is `mlserve serve` running?")
    return ServerUnreachableError(f"cannot reach {url}: {str(exc) or type(exc).__name__}")


def _ready(response: httpx.Response) -> tuple[bool, ReadyResponse | None]:
    if response.status_code not in (200, 503):
        raise_for_error(response)
    try:
        body = ReadyResponse.model_validate(response.json())
    except ValueError:  # a 503 from a proxy in front of a server that is not up yet
        body = None
    return response.status_code == 200, body


def _health(response: httpx.Response) -> HealthResponse:
    if response.status_code == 503:
        # A 503 from the server still carries a health body; one from a proxy does not.
        try:
            return HealthResponse.model_validate(response.json())
        except ValueError:
            raise_for_error(response)
    return _parse(HealthResponse, _decode(response), response)


class Client:
    """Synchronous client: predict, batch, models, health."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns = http is None
        self._http = http or httpx.Client(
            base_url=self.base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        if http is not None and api_key:
            self._http.headers.update(_headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None

    def _call(self, schema: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = self.request(method, path, **kwargs)
        return _parse(schema, _decode(response), response)

    def predict(
        self, text: str | None = None, *, features: Any = None, model: str | None = None
    ) -> PredictResponse:
        body = _predict_body(text, features, model)
        return self._call(PredictResponse, "POST", "/api/predict", json=body)

    def predict_batch(
        self,
        texts: Sequence[str] | None = None,
        *,
        records: Sequence[Any] | None = None,
        model: str | None = None,
    ) -> BatchPredictResponse:
        body = _batch_body(texts, records, model)
        return self._call(BatchPredictResponse, "POST", "/api/predict/batch", json=body)

    def compare(
        self, text: str | None = None, *, features: Any = None, models: Sequence[str]
    ) -> CompareResponse:
        """One input asked of several models: each result is an answer or that model's error."""
        body = _compare_body(text, features, models)
        return self._call(CompareResponse, "POST", "/api/predict/compare", json=body)

    def models(self) -> ModelList:
        return self._call(ModelList, "GET", "/api/models")

    def feedback(self, items: Iterable[tuple[str, Label]]) -> FeedbackResponse:
        """Send (prediction id, true label) pairs: one result per item, and the counts."""
        body = _feedback_body(items)
        return self._call(FeedbackResponse, "POST", "/api/feedback", json=body)

    def feedback_one(self, request_id: str, label: Label) -> FeedbackResult:
        """One label; an unknown id (404) or a label the model lacks (422) raises."""
        body = {"request_id": request_id, "label": label}
        return self._call(FeedbackResult, "POST", "/api/feedback", json=body)

    def quality(
        self, model: str, *, version: int | None = None, window: int | None = None
    ) -> QualityReport:
        """Live accuracy, confusion matrix and drift per version, with training figures."""
        params = _quality_params(version, window)
        return self._call(QualityReport, "GET", f"/api/models/{model}/quality", params=params)

    def start_rollout(self, name: str, request: RolloutRequest) -> RolloutInfo:
        """Start a canary rollout of `request.candidate` (admin); 409 when one is running."""
        body = _rollout_body(request)
        return self._call(RolloutInfo, "PUT", _rollout_path(name), json=body)

    def rollout(self, name: str) -> RolloutInfo:
        """The model's running rollout, else its latest ended one; 404 when it has none."""
        return self._call(RolloutInfo, "GET", _rollout_path(name))

    def abort_rollout(self, name: str) -> RolloutInfo:
        """Abort the running rollout and restore the baseline (admin); 409 when it ended."""
        return self._call(RolloutInfo, "DELETE", _rollout_path(name))

    def index(self) -> dict[str, Any]:
        response = self.request("GET", "/")
        data = _decode(response)
        if not isinstance(data, dict):
            raise _unexpected(response, "a body that is not a JSON object")
        return data

    def live(self) -> bool:
        return self.request("GET", "/api/live").status_code == 200

    def ready(self) -> tuple[bool, ReadyResponse | None]:
        """(ready?, body). A 503 is an answer (not ready), not an error."""
        return _ready(self.request("GET", "/api/ready"))

    def health(self) -> HealthResponse:
        """Deep health: smoke predictions per model. 503 still carries a health body."""
        return _health(self.request("GET", "/api/health"))


class AsyncClient:
    """Asynchronous twin of Client."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns = http is None
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        if http is not None and api_key:
            self._http.headers.update(_headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None

    async def _call(self, schema: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = await self.request(method, path, **kwargs)
        return _parse(schema, _decode(response), response)

    async def predict(
        self, text: str | None = None, *, features: Any = None, model: str | None = None
    ) -> PredictResponse:
        body = _predict_body(text, features, model)
        return await self._call(PredictResponse, "POST", "/api/predict", json=body)

    async def predict_batch(
        self,
        texts: Sequence[str] | None = None,
        *,
        records: Sequence[Any] | None = None,
        model: str | None = None,
    ) -> BatchPredictResponse:
        body = _batch_body(texts, records, model)
        return await self._call(BatchPredictResponse, "POST", "/api/predict/batch", json=body)

    async def compare(
        self, text: str | None = None, *, features: Any = None, models: Sequence[str]
    ) -> CompareResponse:
        """One input asked of several models: each result is an answer or that model's error."""
        body = _compare_body(text, features, models)
        return await self._call(CompareResponse, "POST", "/api/predict/compare", json=body)

    async def models(self) -> ModelList:
        return await self._call(ModelList, "GET", "/api/models")

    async def feedback(self, items: Iterable[tuple[str, Label]]) -> FeedbackResponse:
        """Send (prediction id, true label) pairs: one result per item, and the counts."""
        body = _feedback_body(items)
        return await self._call(FeedbackResponse, "POST", "/api/feedback", json=body)

    async def feedback_one(self, request_id: str, label: Label) -> FeedbackResult:
        """One label; an unknown id (404) or a label the model lacks (422) raises."""
        body = {"request_id": request_id, "label": label}
        return await self._call(FeedbackResult, "POST", "/api/feedback", json=body)

    async def quality(
        self, model: str, *, version: int | None = None, window: int | None = None
    ) -> QualityReport:
        """Live accuracy, confusion matrix and drift per version, with training figures."""
        params = _quality_params(version, window)
        return await self._call(QualityReport, "GET", f"/api/models/{model}/quality", params=params)

    async def start_rollout(self, name: str, request: RolloutRequest) -> RolloutInfo:
        """Start a canary rollout of `request.candidate` (admin); 409 when one is running."""
        body = _rollout_body(request)
        return await self._call(RolloutInfo, "PUT", _rollout_path(name), json=body)

    async def rollout(self, name: str) -> RolloutInfo:
        """The model's running rollout, else its latest ended one; 404 when it has none."""
        return await self._call(RolloutInfo, "GET", _rollout_path(name))

    async def abort_rollout(self, name: str) -> RolloutInfo:
        """Abort the running rollout and restore the baseline (admin); 409 when it ended."""
        return await self._call(RolloutInfo, "DELETE", _rollout_path(name))

    async def live(self) -> bool:
        return (await self.request("GET", "/api/live")).status_code == 200

    async def ready(self) -> tuple[bool, ReadyResponse | None]:
        """(ready?, body). A 503 is an answer (not ready), not an error."""
        return _ready(await self.request("GET", "/api/ready"))

    async def health(self) -> HealthResponse:
        """Deep health: smoke predictions per model. 503 still carries a health body."""
        return _health(await self.request("GET", "/api/health"))
