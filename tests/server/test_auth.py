"""API keys, roles and JWTs: who may call what, and what a refused caller is told."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support.servers import MlserveProcess
from typer.testing import Result

from mlserve.config import Settings
from mlserve.errors import ConfigError
from mlserve.keys import KeyStore, hash_key
from mlserve.keys.auth import FileKeySource, Principal
from mlserve.schemas import ModelMetadata
from mlserve.server.app import create_app
from mlserve.server.auth import AccessPolicy

from .conftest import error_of

try:
    import jwt  # the optional `jwt` extra: pyjwt[crypto]
except ImportError:  # pragma: no cover - the test extra installs it
    jwt = None

needs_jwt = pytest.mark.skipif(jwt is None, reason="needs the jwt extra (pyjwt[crypto])")

FLOWER = [6.1, 2.8, 4.7, 1.2]
PREDICT = {"features": FLOWER, "model": "iris"}
CHALLENGE = 'Bearer realm="mlserve"'
PUBLIC = "0.0.0.0"  # noqa: S104 - what the serve tests bind to (or refuse to)


@pytest.fixture
def keys(make_settings: Callable[..., Settings]) -> KeyStore:
    """The key file the test's settings point at (the CLI's default: $MLSERVE_HOME/state)."""
    return KeyStore(make_settings().keys_file)


@pytest.fixture
def predict_key(keys: KeyStore) -> str:
    return keys.create(role="predict", name="ci").key


@pytest.fixture
def admin_key(keys: KeyStore) -> str:
    return keys.create(role="admin", name="ops").key


@pytest.fixture
def app(
    iris_meta: ModelMetadata,
    predict_key: str,
    admin_key: str,
    serve: Callable[..., TestClient],
) -> TestClient:
    """A server over iris with a predict key 'ci' and an admin key 'ops' in the key file."""
    return serve()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unauthorized(response: httpx.Response, fragment: str = "") -> dict[str, Any]:
    error = error_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith(CHALLENGE)
    assert fragment in error["message"]
    return error


def wait_for_status(
    send: Callable[[], httpx.Response], status: int, timeout: float = 5.0
) -> httpx.Response:
    """Poll until the response has `status` (the key file is re-checked once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        response = send()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)  # a poll interval, not a wait for state


# ---------------------------------------------------------------------------- auth off / on
def test_auth_is_off_without_keys_or_jwt(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    assert client.post("/api/predict", json=PREDICT).status_code == 200
    assert client.post("/api/models/iris/reload").status_code == 200


def test_missing_key_is_401_with_a_bearer_challenge(app: TestClient) -> None:
    response = app.get("/api/models")
    error = unauthorized(response, "missing credentials")
    assert response.headers["www-authenticate"] == CHALLENGE  # no error= when nothing was sent
    assert "X-API-Key" in error["message"]


def test_wrong_key_is_401_invalid_token(app: TestClient) -> None:
    response = app.get("/api/models", headers=bearer("mls_not-a-key"))
    unauthorized(response, "invalid API key")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_non_bearer_authorization_counts_as_missing(app: TestClient, predict_key: str) -> None:
    response = app.get("/api/models", headers={"Authorization": f"Basic {predict_key}"})
    unauthorized(response, "missing credentials")


@pytest.mark.parametrize("header", ["bearer", "lowercase-bearer", "x-api-key"])
def test_bearer_and_x_api_key_are_both_accepted(
    app: TestClient, predict_key: str, header: str
) -> None:
    headers = {
        "bearer": {"Authorization": f"Bearer {predict_key}"},
        "lowercase-bearer": {"authorization": f"bearer {predict_key}"},
        "x-api-key": {"X-API-Key": predict_key},
    }[header]
    assert app.get("/api/models", headers=headers).status_code == 200


def test_expired_key_is_refused(
    iris_meta: ModelMetadata, keys: KeyStore, serve: Callable[..., TestClient]
) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    old = keys.create(role="predict", name="old", expires_at=past + timedelta(days=1), now=past)
    client = serve()
    unauthorized(client.get("/api/models", headers=bearer(old.key)), "expired")


def test_key_revoked_with_the_cli_is_refused_by_the_running_server_within_a_second(
    app: TestClient, predict_key: str, cli: Callable[..., Result]
) -> None:
    assert app.get("/api/models", headers=bearer(predict_key)).status_code == 200
    result = cli("keys", "revoke", "ci")
    assert result.exit_code == 0, result.stderr
    started = time.monotonic()
    response = wait_for_status(lambda: app.get("/api/models", headers=bearer(predict_key)), 401)
    unauthorized(response, "revoked")
    assert time.monotonic() - started < 2.5


def test_a_key_created_while_serving_turns_auth_on(
    iris_meta: ModelMetadata, keys: KeyStore, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    assert client.get("/api/models").status_code == 200
    key = keys.create(role="predict").key
    unauthorized(wait_for_status(lambda: client.get("/api/models"), 401))
    assert client.get("/api/models", headers=bearer(key)).status_code == 200


def test_revoking_the_last_key_does_not_turn_auth_off(
    app: TestClient, keys: KeyStore, predict_key: str
) -> None:
    keys.revoke("ci")
    keys.revoke("ops")
    unauthorized(wait_for_status(lambda: app.get("/api/models", headers=bearer(predict_key)), 401))
    unauthorized(app.get("/api/models"), "missing")


def test_keys_from_settings_are_given_as_hashes(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    deploy, stale = "mls_deploy-" + secrets.token_urlsafe(16), "mls_stale-key"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    client = serve(
        auth={
            "keys": [
                {"name": "deploy", "role": "admin", "sha256": hash_key(deploy)},
                {"name": "stale", "role": "predict", "sha256": hash_key(stale),
                 "expires_at": yesterday},
            ]
        }
    )  # fmt: skip
    unauthorized(client.get("/api/models"))
    assert client.get("/api/models", headers={"X-API-Key": deploy}).status_code == 200
    assert client.post("/api/models/iris/reload", headers=bearer(deploy)).status_code == 200
    unauthorized(client.get("/api/models", headers=bearer(stale)), "expired")


def test_a_broken_key_file_is_refused_at_startup(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.keys_file.parent.mkdir(parents=True)
    settings.keys_file.write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid mlserve key file"):
        create_app(settings)


# ---------------------------------------------------------------------------- roles
def test_predict_role_cannot_reload_admin_can(
    app: TestClient, predict_key: str, admin_key: str
) -> None:
    error = error_of(app.post("/api/models/iris/reload", headers=bearer(predict_key)), 403)
    assert error["code"] == "forbidden"
    assert "'admin' role" in error["message"]
    assert app.post("/api/models/iris/reload", headers=bearer(admin_key)).status_code == 200


def test_deleting_a_job_needs_the_admin_role(
    app: TestClient, predict_key: str, admin_key: str
) -> None:
    error_of(app.delete("/api/jobs/no-such-job", headers=bearer(predict_key)), 403, "forbidden")
    assert app.delete("/api/jobs/no-such-job", headers=bearer(admin_key)).status_code not in (
        401,
        403,
    )


def test_admin_key_can_do_what_predict_can(app: TestClient, admin_key: str) -> None:
    assert app.post("/api/predict", json=PREDICT, headers=bearer(admin_key)).status_code == 200
    assert app.get("/api/models/iris", headers=bearer(admin_key)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("POST", "/api/predict", "predict"),
        ("POST", "/api/predict/batch", "predict"),
        ("POST", "/api/predict/async", "predict"),
        ("GET", "/api/predict/async/abc", "predict"),
        ("GET", "/api/jobs/abc", "predict"),
        ("GET", "/api/jobs/abc/result", "predict"),
        ("DELETE", "/api/jobs/abc", "admin"),
        ("DELETE", "/api/predict/async/abc", "admin"),
        ("GET", "/api/models", "predict"),
        ("GET", "/api/models/iris", "predict"),
        ("GET", "/api/models/iris/versions/1", "predict"),
        ("POST", "/api/models/iris/reload", "admin"),
        ("POST", "/api/models/iris/reload/", "admin"),
        ("PUT", "/api/models/iris/aliases/production", "admin"),
        ("GET", "/api/models/iris/traffic", "admin"),
        ("PUT", "/api/models/iris/traffic", "admin"),
        ("POST", "/api/admin/anything", "admin"),
        ("GET", "/api/health", "predict"),
        ("GET", "/api/health/detailed", "predict"),
        ("POST", "/v2/models/iris/infer", "predict"),
        ("GET", "/v2/models/iris", "predict"),
        ("GET", "/v2", "predict"),
        ("POST", "/v2/repository/index", "admin"),
        ("POST", "/v2/repository/models/iris/load", "admin"),
        ("GET", "/api/live", "open"),
        ("GET", "/api/ready", "open"),
        ("GET", "/v2/health/live", "open"),
        ("GET", "/v2/health/ready", "open"),
        ("GET", "/", "open"),
        ("GET", "/metrics", "open"),
        ("GET", "/docs", "open"),
        ("GET", "/openapi.json", "open"),
        ("GET", "/no/such/route", "predict"),
    ],
)
def test_access_policy_role_table(method: str, path: str, access: str) -> None:
    assert AccessPolicy().required(method, path) == access


def test_principal_allows_its_role_and_below() -> None:
    admin = Principal(name="ops", role="admin", kind="api_key")
    predict = Principal(name="ci", role="predict", kind="api_key")
    nobody = Principal(name="sub", role=None, kind="jwt")
    assert admin.allows("admin") and admin.allows("predict")
    assert predict.allows("predict") and not predict.allows("admin")
    assert not nobody.allows("predict") and nobody.allows("open")
    assert predict.id == "api_key:ci" and nobody.id == "jwt:sub"


def test_v2_repository_refuses_the_predict_role_in_the_v2_error_shape(
    app: TestClient, predict_key: str, admin_key: str
) -> None:
    response = app.post("/v2/repository/index", json={}, headers=bearer(predict_key))
    assert response.status_code == 403
    assert set(response.json()) == {"error"} and "admin" in response.json()["error"]
    assert app.post("/v2/repository/index", json={}, headers=bearer(admin_key)).status_code == 200
    response = app.post("/v2/models/iris/infer", json={})
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    assert response.headers["www-authenticate"] == CHALLENGE


def test_unknown_routes_need_a_key_too(app: TestClient, predict_key: str) -> None:
    unauthorized(app.get("/api/no-such-route"))  # no probing for routes without a key
    assert app.get("/api/no-such-route", headers=bearer(predict_key)).status_code == 404


def test_websockets_are_checked_too(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from mlserve.keys import KeyRecord
    from mlserve.keys.auth import Authenticator, StaticKeySource
    from mlserve.server.middleware.auth import AuthMiddleware

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    key = "mls_" + secrets.token_urlsafe(16)
    record = KeyRecord(name="ws", role="predict", sha256=hash_key(key))
    authenticator = Authenticator(sources=[StaticKeySource([record])])
    inner = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app = AuthMiddleware(inner, authenticator=authenticator, policy=AccessPolicy())
    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
            pass
        assert refused.value.code == 1008
        with client.websocket_connect("/ws", headers={"X-API-Key": key}) as ws:
            assert ws.receive_text() == "hello"


# ---------------------------------------------------------------------------- open routes
@pytest.mark.parametrize(
    "path", ["/api/live", "/api/ready", "/v2/health/live", "/v2/health/ready", "/"]
)
def test_probe_routes_stay_open(app: TestClient, path: str) -> None:
    assert app.get(path).status_code == 200


def test_metrics_and_docs_are_public_by_default(app: TestClient) -> None:
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
        assert app.get(path).status_code == 200, path


def test_metrics_and_docs_can_require_a_key(
    iris_meta: ModelMetadata, predict_key: str, serve: Callable[..., TestClient]
) -> None:
    client = serve(auth={"public_metrics": False, "public_docs": False})
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
        unauthorized(client.get(path))
        assert client.get(path, headers=bearer(predict_key)).status_code == 200, path
    assert client.get("/api/live").status_code == 200


def test_cors_preflight_passes_without_credentials(
    iris_meta: ModelMetadata, predict_key: str, serve: Callable[..., TestClient]
) -> None:
    client = serve(server={"cors_origins": ["https://app.example"]})
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = client.options("/api/predict", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    refused = client.post("/api/predict", json=PREDICT, headers={"Origin": "https://app.example"})
    unauthorized(refused)
    # The browser may read the 401's error body: it carries the CORS headers too.
    assert refused.headers["access-control-allow-origin"] == "https://app.example"


# ---------------------------------------------------------------------------- the fast path
def test_the_predict_fast_path_is_protected(app: TestClient, predict_key: str) -> None:
    unauthorized(app.post("/api/predict", json=PREDICT))
    unauthorized(app.post("/api/predict", json=PREDICT, headers=bearer("mls_wrong")))
    response = app.post("/api/predict", json=PREDICT, headers=bearer(predict_key))
    assert response.status_code == 200
    assert response.json()["model"] == "iris"
    # Malformed bodies fall through to the full route, which is behind auth as well.
    unauthorized(app.post("/api/predict", content=b"{not json"))


# ---------------------------------------------------------------------------- secrecy
def test_keys_never_appear_in_logs_or_error_bodies(
    app: TestClient, predict_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "mls_" + secrets.token_urlsafe(32)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mlserve")
    bodies = []
    for key in (wrong, predict_key):
        for headers in (bearer(key), {"X-API-Key": key}):
            for send in (
                lambda h: app.post("/api/predict", json=PREDICT, headers=h),
                lambda h: app.post("/api/models/iris/reload", headers=h),
                lambda h: app.post("/v2/repository/index", json={}, headers=h),
                lambda h: app.get("/api/models", headers=h),
            ):
                response = send(headers)
                bodies.append(response.text + str(dict(response.headers)))
    records = [str(vars(r)) + r.getMessage() for r in caplog.records]
    assert any(getattr(r, "principal", None) == "ci" for r in caplog.records)  # the name is
    for secret in (wrong, predict_key, hash_key(predict_key)):
        assert not any(secret in text for text in bodies)
        assert not any(secret in text for text in records)
        assert secret not in caplog.text


def test_access_log_names_the_principal_not_the_key(
    app: TestClient, predict_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlserve.access")
    app.get("/api/models", headers=bearer(predict_key))
    app.get("/api/models")
    access = [r for r in caplog.records if r.name == "mlserve.access"]
    assert [getattr(r, "principal", "absent") for r in access] == ["ci", None]


def test_refusals_are_counted_in_the_error_metric(app: TestClient, predict_key: str) -> None:
    app.get("/api/models")
    app.post("/api/models/iris/reload", headers=bearer(predict_key))
    metrics = app.get("/metrics").text
    assert 'mlserve_errors_total{code="unauthorized"} 1.0' in metrics
    assert 'mlserve_errors_total{code="forbidden"} 1.0' in metrics


# ---------------------------------------------------------------------------- OpenAPI
def test_openapi_declares_bearer_and_api_key_security(app: TestClient) -> None:
    schema = app.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {**schemes["BearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert {"BearerAuth": []} in schema["security"]
    paths = schema["paths"]
    assert paths["/api/live"]["get"]["security"] == []
    assert paths["/metrics"]["get"]["security"] == []
    assert "security" not in paths["/api/predict"]["post"]  # the global requirement applies
    assert {"401", "403"} <= set(paths["/api/predict"]["post"]["responses"])
    reload = paths["/api/models/{name}/reload"]["post"]
    assert "admin" in reload["description"]
    assert "403" in reload["responses"]


# ---------------------------------------------------------------------------- the key file
def test_file_key_source_rereads_a_changed_file_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = store.create(role="predict", name="ci").key
    now = [100.0]
    source = FileKeySource(path, check_interval_s=1.0, clock=lambda: now[0])

    def status() -> str:
        found = asyncio.run(source.find(hash_key(key)))
        return found[0].status()

    assert status() == "active"
    store.revoke("ci")
    now[0] += 0.5
    assert status() == "active"  # not re-checked yet
    now[0] += 0.6
    assert status() == "revoked"


def test_file_key_source_keeps_its_keys_when_the_file_turns_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    key = KeyStore(path).create(role="admin", name="ops").key
    now = [0.0]
    source = FileKeySource(path, clock=lambda: now[0])
    path.write_text('{"keys": [{"name": "broken"}]}')
    now[0] += 5
    with caplog.at_level(logging.ERROR, logger="mlserve"):
        found = asyncio.run(source.find(hash_key(key)))
    assert [r.name for r in found] == ["ops"]
    assert "not a valid mlserve key file" in caplog.text


# ---------------------------------------------------------------------------- JWT
SECRET = secrets.token_urlsafe(48)


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    now = int(time.time())
    body = {"sub": "alice", "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return str(jwt.encode(body, key, algorithm=algorithm))


@pytest.fixture
def jwt_app(iris_meta: ModelMetadata, serve: Callable[..., TestClient]) -> TestClient:
    return serve(auth={"jwt_secret": SECRET})


@needs_jwt
def test_jwt_hs256_with_a_role_claim_is_accepted(jwt_app: TestClient) -> None:
    good = token({"role": "predict"})
    assert jwt_app.post("/api/predict", json=PREDICT, headers=bearer(good)).status_code == 200
    unauthorized(jwt_app.get("/api/models"))  # JWT configured: auth is on without any key


@needs_jwt
def test_jwt_expired_is_refused(jwt_app: TestClient) -> None:
    old = token({"role": "predict", "exp": int(time.time()) - 3600})
    unauthorized(jwt_app.get("/api/models", headers=bearer(old)), "expired")


@needs_jwt
def test_jwt_not_yet_valid_is_refused(jwt_app: TestClient) -> None:
    later = token({"role": "predict", "nbf": int(time.time()) + 3600})
    unauthorized(jwt_app.get("/api/models", headers=bearer(later)), "not valid yet")


@needs_jwt
def test_jwt_with_a_wrong_signature_is_refused(jwt_app: TestClient) -> None:
    forged = token({"role": "admin"}, key=secrets.token_urlsafe(48))
    unauthorized(jwt_app.get("/api/models", headers=bearer(forged)), "signature")


@needs_jwt
def test_jwt_without_sub_or_exp_is_refused(jwt_app: TestClient) -> None:
    unauthorized(jwt_app.get("/api/models", headers=bearer(token({"sub": None}))), "'sub'")
    unauthorized(jwt_app.get("/api/models", headers=bearer(token({"exp": None}))), "'exp'")


@needs_jwt
def test_jwt_without_a_role_is_forbidden(jwt_app: TestClient) -> None:
    error = error_of(jwt_app.get("/api/models", headers=bearer(token({}))), 403, "forbidden")
    assert "no mlserve role" in error["message"]


@needs_jwt
def test_jwt_scope_claim_grants_roles(jwt_app: TestClient) -> None:
    reader = token({"scope": "openid mlserve:predict"})
    writer = token({"scope": "openid admin"})
    error_of(jwt_app.post("/api/models/iris/reload", headers=bearer(reader)), 403, "forbidden")
    assert jwt_app.get("/api/models", headers=bearer(reader)).status_code == 200
    assert jwt_app.post("/api/models/iris/reload", headers=bearer(writer)).status_code == 200


@needs_jwt
def test_jwt_audience_and_issuer_are_checked_when_configured(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(
        auth={"jwt_secret": SECRET, "jwt_audience": "mlserve", "jwt_issuer": "https://idp"}
    )
    good = token({"role": "predict", "aud": "mlserve", "iss": "https://idp"})
    assert client.get("/api/models", headers=bearer(good)).status_code == 200
    other_aud = token({"role": "predict", "aud": "billing", "iss": "https://idp"})
    unauthorized(client.get("/api/models", headers=bearer(other_aud)), "audience")
    other_iss = token({"role": "predict", "aud": "mlserve", "iss": "https://evil"})
    unauthorized(client.get("/api/models", headers=bearer(other_iss)), "issuer")


@needs_jwt
def test_jwt_and_api_keys_work_side_by_side(
    iris_meta: ModelMetadata, predict_key: str, serve: Callable[..., TestClient]
) -> None:
    client = serve(auth={"jwt_secret": SECRET})
    assert client.get("/api/models", headers=bearer(predict_key)).status_code == 200
    assert client.get("/api/models", headers=bearer(token({"role": "predict"}))).status_code == 200


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[Any, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem


@needs_jwt
def test_jwt_rs256_with_a_public_key_file(
    iris_meta: ModelMetadata,
    serve: Callable[..., TestClient],
    tmp_path: Path,
    rsa_pair: tuple[Any, bytes],
) -> None:
    private, public_pem = rsa_pair
    pem_file = tmp_path / "idp.pem"
    pem_file.write_bytes(public_pem)
    client = serve(auth={"jwt_public_key": str(pem_file)})
    good = token({"role": "admin"}, key=private, algorithm="RS256")
    assert client.post("/api/models/iris/reload", headers=bearer(good)).status_code == 200
    # Only RS256 is configured: HS256 tokens (and unsigned ones) are refused by algorithm.
    hs256 = token({"role": "admin"}, key=SECRET, algorithm="HS256")
    unauthorized(client.get("/api/models", headers=bearer(hs256)), "algorithm")
    unsigned = token({"role": "admin"}, key=None, algorithm="none")
    unauthorized(client.get("/api/models", headers=bearer(unsigned)), "algorithm")


@needs_jwt
@pytest.mark.parametrize(
    "secret", ["", "secret", "changeme", "x" * 64, "a-string-secret-at-least-256-bits-long"]
)
def test_weak_jwt_secrets_are_refused_at_startup(
    make_settings: Callable[..., Settings], secret: str
) -> None:
    with pytest.raises(ConfigError, match="jwt_secret"):
        create_app(make_settings(auth={"jwt_secret": secret}))


@needs_jwt
def test_a_bad_public_key_file_is_refused_at_startup(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        create_app(make_settings(auth={"jwt_public_key": str(tmp_path / "missing.pem")}))
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        create_app(make_settings(auth={"jwt_public_key": str(tmp_path / "bad.pem")}))


def test_jwt_settings_without_pyjwt_name_the_extra(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)  # `import jwt` now raises ImportError
    with pytest.raises(ConfigError, match=r"mlserve-sklearn\[jwt\]"):
        create_app(make_settings(auth={"jwt_secret": SECRET}))


# ---------------------------------------------------------------------------- serve
def test_serve_exits_2_on_a_weak_jwt_secret(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLSERVE_AUTH__JWT_SECRET", "changeme")
    result = cli("serve", "--registry", tmp_path / "registry", "--no-sample")
    assert_user_error(result, "auth.jwt_secret")
    assert "changeme" not in result.stderr


def test_serve_refuses_a_public_address_without_auth(
    run_mlserve: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    started = time.monotonic()
    proc = run_mlserve(
        "serve", "--host", PUBLIC, "--port", "0", "--registry", tmp_path / "r", "--no-sample"
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to serve on 0.0.0.0 without authentication" in proc.stderr
    assert "--allow-unauthenticated" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_serve_passes_the_check_when_a_key_exists(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlserve.cli import serve_cmd

    KeyStore(tmp_path / "home" / "state" / "keys.json").create(role="predict")
    ran: list[Settings] = []
    monkeypatch.setattr("mlserve.server.run.run", lambda settings, **_: ran.append(settings))
    # Not on the public address for real: the check under test runs before the bind.
    monkeypatch.setattr("mlserve.server.run.bind_socket", lambda settings: socket.socket())
    result = cli("serve", "--host", PUBLIC, "--registry", tmp_path / "registry", "--no-sample")
    assert result.exit_code == 0, result.stderr
    assert ran and ran[0].server.host == PUBLIC
    assert serve_cmd.is_loopback("127.0.0.1") and serve_cmd.is_loopback("::1")
    assert serve_cmd.is_loopback("localhost") and serve_cmd.is_loopback("127.1.2.3")
    assert not serve_cmd.is_loopback(PUBLIC) and not serve_cmd.is_loopback("")
    assert not serve_cmd.is_loopback("example.com") and not serve_cmd.is_loopback("::")


@pytest.fixture
def process_registry(tmp_path: Path, iris_estimator: Any) -> Path:
    from mlserve.registry import Registry

    root = tmp_path / "served"
    Registry(root).register_estimator(iris_estimator, name="iris", aliases=["production"])
    return root


@pytest.mark.slow
def test_serve_starts_on_a_public_address_with_allow_unauthenticated(
    start_server: Callable[..., MlserveProcess], process_registry: Path
) -> None:
    args = ["--host", PUBLIC, "--allow-unauthenticated"]
    server = start_server(process_registry, args=args, log_level=None)
    server.wait_ready()

    assert "WITHOUT authentication" in server.output()
    assert server.post("/api/predict", PREDICT).status_code == 200
