"""The error hierarchy: expected failures carry their HTTP status and CLI exit code."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


class MlserveError(Exception):
    """Base of every error mlserve expects; the message is safe to show to a user."""

    status_code: int = 500
    code: str = "internal_error"
    exit_code: int = 1

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers that go with this error (e.g. Retry-After)."""
        return {}


class ConfigError(MlserveError):
    """Settings could not be read or are invalid."""

    code = "config_error"
    exit_code = 2


class UsageError(MlserveError):
    """A command was called with arguments that cannot work."""

    code = "usage_error"
    status_code = 400
    exit_code = 2


class InvalidReferenceError(MlserveError):
    """A model reference (name, name:3, name@alias) is malformed."""

    code = "invalid_reference"
    status_code = 422
    exit_code = 2


class NotFoundError(MlserveError):
    """A model, version, alias, job or key does not exist."""

    code = "not_found"
    status_code = 404
    exit_code = 1


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class RegistryError(MlserveError):
    """The registry directory cannot be read or written."""

    code = "registry_error"
    exit_code = 2


class ReadOnlyModelsError(RegistryError):
    """A registry change (alias, version) asked of a server that serves model files."""

    code = "no_registry"
    status_code = 409
    exit_code = 2


class IntegrityError(RegistryError):
    """A registered artifact no longer matches the sha256 recorded at registration."""

    code = "integrity_error"
    exit_code = 1


class InvalidModelError(MlserveError):
    """A file offered for registration is not a usable scikit-learn model."""

    code = "invalid_model"
    status_code = 422
    exit_code = 2


class DataError(MlserveError):
    """Training data is missing, unreadable or unusable."""

    code = "invalid_data"
    status_code = 422
    exit_code = 2


class InvalidInputError(MlserveError):
    """A prediction input does not fit the model (wrong type, feature count or names)."""

    code = "invalid_input"
    status_code = 422
    exit_code = 2


class PayloadTooLargeError(MlserveError):
    code = "payload_too_large"
    status_code = 413
    exit_code = 2


class ModelUnavailableError(MlserveError):
    """The model exists but cannot serve right now (not loaded, degraded, overloaded)."""

    code = "model_unavailable"
    status_code = 503
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class OverloadedError(ModelUnavailableError):
    """The model's queue is full; the request was shed."""

    code = "overloaded"


class PredictionError(MlserveError):
    """The model raised while predicting; internals are logged, not returned."""

    code = "prediction_failed"
    status_code = 500
    exit_code = 1


class ServerUnreachableError(MlserveError):
    """The client could not connect to, or got no answer from, the server."""

    code = "unreachable"
    status_code = 503
    exit_code = 1


class ServerResponseError(MlserveError):
    """The server answered with an error body; carries its status and code."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status_code = status
        self.code = code
        self.request_id = request_id


class Unauthorized(MlserveError):
    """No valid credentials: the API key or token is missing, wrong, expired or revoked."""

    code = "unauthorized"
    status_code = 401
    exit_code = 1

    def __init__(
        self, message: str, *, invalid_token: bool = False, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.invalid_token = invalid_token

    def headers(self) -> dict[str, str]:
        # RFC 6750: error="invalid_token" only when credentials were sent and refused.
        challenge = 'Bearer realm="mlserve"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(MlserveError):
    """Valid credentials whose role does not allow the request."""

    code = "forbidden"
    status_code = 403
    exit_code = 1


class RateLimited(MlserveError):
    """The client sent more requests than its rate limit allows."""

    code = "rate_limited"
    status_code = 429
    exit_code = 1

    def __init__(
        self, message: str, *, retry_after: float, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def redact_paths(message: str, *roots: Path) -> str:
    """`message` without the server's file paths under `roots` (a registry error names its
    files; the server log keeps them, clients get the rest of the message)."""
    for root in roots:
        if len(root.parts) < 2:
            continue  # never "/" (it would eat every absolute path, routes included)
        message = re.sub(rf"\s*{re.escape(str(root))}[^\s:;,)]*", "", message)
    return message
