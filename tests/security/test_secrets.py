"""Credentials never reach a log or an answer: a real server with API keys and JWTs, logging
everything (debug level, JSON access log), called with valid, wrong, revoked and expired keys
and tokens on every kind of route, in every place a client may put them. Neither a key, its
hash, a token nor the JWT secret appears in the server's output or in any response; the
caller's name does. (In-process checks: tests/server/test_auth.py.)"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from support.data import populate
from support.servers import running

from mlserve.keys import KeyStore, hash_key

jwt = pytest.importorskip("jwt")  # the `jwt` extra (in the test extra)

pytestmark = pytest.mark.slow

FLOWER = [5.1, 3.5, 1.4, 0.2]


def token(secret: str, **claims: object) -> str:
    now = datetime.now(UTC)
    payload = {"sub": "svc-batch", "role": "predict", "exp": now + timedelta(minutes=5), **claims}
    return str(jwt.encode(payload, secret, algorithm="HS256"))


def test_no_credential_appears_in_logs_or_answers(tmp_path: Path) -> None:
    root, home = tmp_path / "registry", tmp_path / "home"
    populate(root)
    store = KeyStore(home / "state" / "keys.json")
    predict_key = store.create(role="predict", name="ci").key
    admin_key = store.create(role="admin", name="ops").key
    revoked_key = store.create(role="predict", name="old").key
    store.revoke("old")
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = store.create(  # made two hours ago, expired one hour ago
        role="predict", name="brief", expires_at=past + timedelta(hours=1), now=past
    )
    jwt_secret = secrets.token_urlsafe(48)
    good_jwt = token(jwt_secret)
    expired_jwt = token(jwt_secret, exp=datetime.now(UTC) - timedelta(hours=1))
    forged_jwt = token(secrets.token_urlsafe(48))
    unsigned_jwt = str(
        jwt.encode({"sub": "x", "role": "admin", "exp": 2**31}, None, algorithm="none")
    )
    wrong_key = "mls_" + secrets.token_urlsafe(32)
    credentials = [
        predict_key, admin_key, revoked_key, expired.key, good_jwt, expired_jwt, forged_jwt,
        unsigned_jwt, wrong_key,
    ]  # fmt: skip
    hidden = [*credentials, *(hash_key(c) for c in credentials), jwt_secret]

    config = {"auth": {"jwt_secret": jwt_secret}, "logging": {"format": "json"}}
    answers: list[str] = []
    with running(root, home, config=config, log_level="debug") as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            calls = [
                ("POST", "/api/predict", {"features": FLOWER, "model": "iris"}),
                ("POST", "/api/predict", {"features": [1], "model": "iris"}),  # 422
                ("POST", "/api/predict/batch", {"texts": ["good"], "model": "sentiment"}),
                ("POST", "/v2/models/iris/infer", {"inputs": []}),
                ("POST", "/api/models/iris/reload", None),  # admin
                ("POST", "/v2/repository/index", {}),  # admin
                ("GET", "/api/models", None),
                ("GET", "/api/jobs/nope", None),
                ("GET", "/no/such/route", None),
            ]
            for credential in credentials:
                placements = [
                    {"headers": {"Authorization": f"Bearer {credential}"}},
                    {"headers": {"X-API-Key": credential}},
                    {"headers": {"Authorization": credential}},  # no scheme
                    {"params": {"api_key": credential, "token": credential}},  # not read
                ]
                for method, path, body in calls:
                    for placement in placements:
                        response = http.request(method, path, json=body, **placement)  # type: ignore[arg-type]
                        assert response.status_code < 500, response.text
                        answers.append(response.text + str(dict(response.headers)))
            statuses = {
                "good key": http.get("/api/models", headers={"X-API-Key": predict_key}),
                "good jwt": http.get(
                    "/api/models", headers={"Authorization": f"Bearer {good_jwt}"}
                ),
                "revoked": http.get("/api/models", headers={"X-API-Key": revoked_key}),
                "expired": http.get("/api/models", headers={"X-API-Key": expired.key}),
                "forged": http.get(
                    "/api/models", headers={"Authorization": f"Bearer {forged_jwt}"}
                ),
                "none alg": http.get(
                    "/api/models", headers={"Authorization": f"Bearer {unsigned_jwt}"}
                ),
            }
            answers.append(http.get("/metrics").text)
            detailed = http.get("/api/health/detailed", headers={"X-API-Key": admin_key})
            answers.append(detailed.text)
        log = server.output()

    assert {k: r.status_code for k, r in statuses.items()} == {
        "good key": 200, "good jwt": 200, "revoked": 401, "expired": 401, "forged": 401,
        "none alg": 401,
    }  # fmt: skip
    assert '"principal": "ci"' in log and '"principal": "svc-batch"' in log  # who, logged
    assert log.count('"path": "/api/predict"') >= len(credentials)  # every request logged
    for secret in hidden:
        assert secret not in log, "a credential is in the server log"
        assert not any(secret in answer for answer in answers), "a credential was answered"
