"""API-key revocations shared through Redis: revoked anywhere, refused by every replica."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

from mlserve.config import load_settings
from mlserve.keys import KeyRecord, hash_key
from mlserve.keys.redis import RedisRevocationSource
from mlserve.server.app import create_app

Run = Callable[[Coroutine[Any, Any, Any]], Any]
FLOWER = {"features": [5.1, 3.5, 1.4, 0.2]}
WAIT_S = 10.0


def create_key(cli: Callable[..., Result], name: str) -> str:
    result = cli("keys", "create", "--role", "predict", "--name", name)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def replica(registry: Path, home: Path, url: str, prefix: str, **auth: Any) -> TestClient:
    settings = load_settings(
        None,
        home=str(home),
        registry={"path": str(registry)},
        auth=auth,
        redis={"url": url, "key_prefix": prefix, "health_check_interval_s": 0.2},
    )
    return TestClient(create_app(settings))


def predict(client: TestClient, key: str) -> Any:
    return client.post("/api/predict", json=FLOWER, headers={"Authorization": f"Bearer {key}"})


def wait_refused(client: TestClient, key: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        response = predict(client, key)
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)  # polling interval of a bounded wait


@pytest.mark.redis
def test_a_key_revoked_on_one_host_is_refused_by_a_replica_with_its_own_key_file(
    cli: Callable[..., Result],
    home: Path,
    tmp_path: Path,
    iris_registry: Path,
    redis_url: str,
    key_prefix: str,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSERVE_REDIS__URL", redis_url)
    monkeypatch.setenv("MLSERVE_REDIS__KEY_PREFIX", key_prefix)
    key = create_key(cli, "ci")
    # Replica B keeps a copy of the key file taken before the revocation: not shared.
    other_home = tmp_path / "replica-b"
    (other_home / "state").mkdir(parents=True)
    shutil.copy(home / "state" / "keys.json", other_home / "state" / "keys.json")

    with replica(iris_registry, other_home, redis_url, key_prefix) as replica_b:
        assert predict(replica_b, key).status_code == 200
        revoked = cli("keys", "revoke", "ci")
        refused = wait_refused(replica_b, key)

    assert revoked.exit_code == 0, revoked.stderr
    assert "Redis" in revoked.stderr
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["message"] == "API key has been revoked"
    entry = json.loads(redis_client.hget(f"{key_prefix}revoked", hash_key(key)))
    assert entry["name"] == "ci" and entry["role"] == "predict"
    assert key not in json.dumps(entry)  # who it was, never the key


@pytest.mark.redis
def test_a_key_from_settings_can_be_revoked_through_redis(
    cli: Callable[..., Result],
    home: Path,
    iris_registry: Path,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "mls_" + "k" * 20 + "settings-key-for-the-test"
    entry = {"name": "deploy", "role": "predict", "sha256": hash_key(key)}
    with replica(iris_registry, home, redis_url, key_prefix, keys=[entry]) as server:
        assert predict(server, key).status_code == 200
        monkeypatch.setenv("MLSERVE_AUTH__KEYS", json.dumps([entry]))
        monkeypatch.setenv("MLSERVE_REDIS__URL", redis_url)
        monkeypatch.setenv("MLSERVE_REDIS__KEY_PREFIX", key_prefix)
        revoked = cli("keys", "revoke", "deploy")
        refused = wait_refused(server, key)
        listed = cli("keys", "list", "--json")

    assert revoked.exit_code == 0, revoked.stderr
    assert "remove it from auth.keys" in revoked.stderr
    assert refused.status_code == 401
    (record,) = json.loads(listed.stdout)
    assert (record["name"], record["source"], record["status"]) == ("deploy", "settings", "revoked")


def test_without_redis_a_settings_key_still_cannot_be_revoked(
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    assert_user_error: Callable[..., None],
) -> None:
    entry = {"name": "deploy", "role": "predict", "sha256": "a" * 64}
    monkeypatch.setenv("MLSERVE_AUTH__KEYS", json.dumps([entry]))
    assert_user_error(cli("keys", "revoke", "deploy"), "auth.keys", "redis.url")


def test_revoking_while_redis_is_unreachable_revokes_in_the_file_and_says_what_failed(
    cli: Callable[..., Result], dead_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_key(cli, "ci")
    monkeypatch.setenv("MLSERVE_REDIS__URL", dead_redis_url)
    first = cli("keys", "revoke", "ci")
    listed = cli("keys", "list", "--json")  # Redis unreadable: a warning, the file's view

    assert first.exit_code == 1
    message = first.stderr.strip()
    assert message.startswith("error: cannot record the revocation of 'ci' in redis")
    assert "run the command again" in message
    assert "Traceback" not in first.stderr
    assert listed.exit_code == 0
    assert "cannot read the revocations in Redis" in listed.stderr
    assert json.loads(listed.stdout)[0]["status"] == "revoked"


@pytest.mark.redis
def test_running_revoke_again_records_an_earlier_file_revocation_in_redis(
    cli: Callable[..., Result],
    redis_url: str,
    key_prefix: str,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = create_key(cli, "ci")
    assert cli("keys", "revoke", "ci").exit_code == 0  # Redis not configured yet
    monkeypatch.setenv("MLSERVE_REDIS__URL", redis_url)
    monkeypatch.setenv("MLSERVE_REDIS__KEY_PREFIX", key_prefix)
    again = cli("keys", "revoke", "ci")

    assert again.exit_code == 0, again.stderr
    assert "already revoked; recorded in Redis" in again.stderr
    assert redis_client.hexists(f"{key_prefix}revoked", hash_key(key))


def test_redis_down_falls_back_to_the_local_key_file(
    cli: Callable[..., Result], home: Path, iris_registry: Path, dead_redis_url: str
) -> None:
    good = create_key(cli, "good")
    bad = create_key(cli, "bad")
    assert cli("keys", "revoke", "bad").exit_code == 0

    with replica(iris_registry, home, dead_redis_url, "mlst-dead:") as server:
        ok = predict(server, good)
        refused = predict(server, bad)
        health = server.get("/api/health", headers={"X-API-Key": good}).json()

    assert ok.status_code == 200
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "API key has been revoked"
    assert health["dependencies"] == {"redis": "down"}


@pytest.mark.redis
def test_revocations_read_before_an_outage_stay_in_force_during_it(
    make_backend: Callable[..., Any], run: Run, redis_client: Any, key_prefix: str
) -> None:
    from mlserve.keys.redis import revocation_entry

    record = KeyRecord(name="gone", role="admin", sha256="b" * 64)
    redis_client.hset(f"{key_prefix}revoked", record.sha256, revocation_entry(record))
    backend = make_backend(health_check_interval_s=3600)  # no ping brings it back here
    source = RedisRevocationSource(backend, refresh_s=0.0)

    (found,) = run(source.find("b" * 64))
    backend.failed(ConnectionError("simulated outage"))
    during = run(source.find("b" * 64))

    assert (found.name, found.role, found.status(), found.source) == (
        "gone",
        "admin",
        "revoked",
        "redis",
    )
    assert [r.name for r in during] == ["gone"]
    assert run(source.find("c" * 64)) == []
    assert run(source.has_keys()) is False  # revocations alone never turn auth on
