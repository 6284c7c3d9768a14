"""Typed HTTP client for a running mlserve server (sync and async), built on httpx.

The transport is injectable: pass `transport=httpx.MockTransport(...)` or an `httpx.Client`
(e.g. FastAPI's TestClient) in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from mlserve.errors import ServerResponseError, ServerUnreachableError
from mlserve.schemas import (
    BatchPredictResponse,
    HealthResponse,
    ModelList,
    PredictResponse,
    ReadyResponse,
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


def raise_for_error(response: httpx.Response) -> None:
    """Turn a non-2xx response into ServerResponseError with the server's own message."""
    if response.is_success:
        return
    code, message, request_id = "http_error", "", None
    try:
        data = response.json()
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code", code))
            message = str(err.get("message", ""))
            request_id = err.get("request_id")
        elif isinstance(err, str):  # the V2 protocol's shape
            message = err
    except ValueError:
        message = response.text[:200]
    message = message or response.reason_phrase or "error"
    raise ServerResponseError(
        f"{response.status_code} {code}: {message}",
        status=response.status_code,
        code=code,
        request_id=request_id,
    )


def _unreachable(url: str, exc: httpx.TransportError) -> ServerUnreachableError:
    if isinstance(exc, httpx.TimeoutException):
        return ServerUnreachableError(f"no answer from {url} in time ({type(exc).__name__})")
    reason = str(exc) or type(exc).__name__
    if "refused" in reason.lower() or isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if "refused" in reason.lower() else reason
        return ServerUnreachableError(f"cannot reach {url}: {reason} — is `mlserve serve` running?")
    return ServerUnreachableError(f"cannot reach {url}: {reason}")


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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json()

    def predict(
        self, text: str | None = None, *, features: Any = None, model: str | None = None
    ) -> PredictResponse:
        data = self._json("POST", "/api/predict", json=_predict_body(text, features, model))
        return PredictResponse.model_validate(data)

    def predict_batch(
        self,
        texts: Sequence[str] | None = None,
        *,
        records: Sequence[Any] | None = None,
        model: str | None = None,
    ) -> BatchPredictResponse:
        data = self._json("POST", "/api/predict/batch", json=_batch_body(texts, records, model))
        return BatchPredictResponse.model_validate(data)

    def models(self) -> ModelList:
        return ModelList.model_validate(self._json("GET", "/api/models"))

    def index(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", "/")
        return data

    def live(self) -> bool:
        return self.request("GET", "/api/live").status_code == 200

    def ready(self) -> tuple[bool, ReadyResponse | None]:
        """(ready?, body). A 503 is an answer (not ready), not an error."""
        response = self.request("GET", "/api/ready")
        if response.status_code not in (200, 503):
            raise_for_error(response)
        try:
            body = ReadyResponse.model_validate(response.json())
        except ValueError:
            body = None
        return response.status_code == 200, body

    def health(self) -> HealthResponse:
        """Deep health: smoke predictions per model. 503 still carries a health body."""
        response = self.request("GET", "/api/health")
        if response.status_code not in (200, 503):
            raise_for_error(response)
        return HealthResponse.model_validate(response.json())


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

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json()

    async def predict(
        self, text: str | None = None, *, features: Any = None, model: str | None = None
    ) -> PredictResponse:
        data = await self._json("POST", "/api/predict", json=_predict_body(text, features, model))
        return PredictResponse.model_validate(data)

    async def predict_batch(
        self,
        texts: Sequence[str] | None = None,
        *,
        records: Sequence[Any] | None = None,
        model: str | None = None,
    ) -> BatchPredictResponse:
        data = await self._json(
            "POST", "/api/predict/batch", json=_batch_body(texts, records, model)
        )
        return BatchPredictResponse.model_validate(data)

    async def models(self) -> ModelList:
        return ModelList.model_validate(await self._json("GET", "/api/models"))

    async def live(self) -> bool:
        return (await self.request("GET", "/api/live")).status_code == 200

    async def ready(self) -> tuple[bool, ReadyResponse | None]:
        response = await self.request("GET", "/api/ready")
        if response.status_code not in (200, 503):
            raise_for_error(response)
        try:
            body = ReadyResponse.model_validate(response.json())
        except ValueError:
            body = None
        return response.status_code == 200, body

    async def health(self) -> HealthResponse:
        response = await self.request("GET", "/api/health")
        if response.status_code not in (200, 503):
            raise_for_error(response)
        return HealthResponse.model_validate(response.json())
