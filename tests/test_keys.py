"""The key file: keys shown once, hashes stored, unique names, revocation, expiry parsing."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlserve.config import AuthSettings
from mlserve.errors import ConfigError, NotFoundError, UsageError
from mlserve.keys import (
    KEY_PREFIX,
    KeyStore,
    hash_key,
    parse_expiry,
    read_key_file,
    records_from_settings,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "state" / "keys.json")


def test_hash_is_the_hex_sha256_of_the_key() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_create_returns_the_key_once_and_stores_only_its_hash(store: KeyStore) -> None:
    created = store.create(role="predict", name="ci")
    assert created.key.startswith(KEY_PREFIX) and len(created.key) >= 40
    text = store.path.read_text()
    assert created.key not in text
    stored = json.loads(text)["keys"]
    assert stored == [
        {
            "name": "ci",
            "role": "predict",
            "sha256": hash_key(created.key),
            "created_at": stored[0]["created_at"],
            "expires_at": None,
            "revoked_at": None,
        }
    ]
    assert store.list()[0].status() == "active"


def test_every_key_is_different(store: KeyStore) -> None:
    keys = {store.create(role="predict").key for _ in range(5)}
    assert len(keys) == 5
    assert len({r.name for r in store.list()}) == 5  # generated names are unique too


def test_names_are_unique_among_active_keys(store: KeyStore) -> None:
    store.create(role="predict", name="ci")
    with pytest.raises(UsageError, match="already exists"):
        store.create(role="admin", name="ci")
    store.revoke("ci")
    store.create(role="admin", name="ci")  # free again once revoked
    assert [(r.name, r.status()) for r in store.list()] == [("ci", "revoked"), ("ci", "active")]


def test_an_expired_name_can_be_reused(store: KeyStore) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    store.create(role="predict", name="ci", expires_at=past + timedelta(days=1), now=past)
    assert store.list()[0].status() == "expired"
    store.create(role="predict", name="ci")


def test_invalid_names_and_roles_are_refused(store: KeyStore) -> None:
    for name in ("", "-x", "has space", "x" * 65, "a/b"):
        with pytest.raises(UsageError, match="invalid key name"):
            store.create(role="predict", name=name)
    with pytest.raises(UsageError, match="invalid role"):
        store.create(role="root", name="x")  # type: ignore[arg-type]
    assert not store.path.exists()


def test_revoke_marks_the_key_and_keeps_the_record(store: KeyStore) -> None:
    store.create(role="admin", name="ops")
    revoked = store.revoke("ops", now=NOW + timedelta(days=365))
    assert revoked.revoked_at is not None and revoked.status() == "revoked"
    assert store.list()[0].revoked_at == revoked.revoked_at


def test_revoking_an_unknown_or_revoked_key_is_not_found(store: KeyStore) -> None:
    with pytest.raises(NotFoundError, match="no key named 'ghost'"):
        store.revoke("ghost")
    store.create(role="admin", name="ops")
    store.revoke("ops")
    with pytest.raises(NotFoundError, match="already revoked"):
        store.revoke("ops")


def test_expiry_in_the_past_is_refused(store: KeyStore) -> None:
    with pytest.raises(UsageError, match="already passed"):
        store.create(role="predict", expires_at=datetime.now(UTC) - timedelta(seconds=1))


def test_concurrent_writers_are_serialised(store: KeyStore) -> None:
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            store.create(role="predict", name=f"k{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.name for r in store.list()) == sorted(f"k{i}" for i in range(12))
    assert not list(store.path.parent.glob("*.tmp"))  # atomic writes leave no temp files


def test_a_missing_file_has_no_keys_and_a_broken_one_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert read_key_file(path) == []
    path.write_text("[1, 2")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_key_file(path)
    path.write_text('{"keys": [{"name": "x", "role": "root", "sha256": "00"}]}')
    with pytest.raises(ConfigError, match=str(path)):
        read_key_file(path)


def test_settings_keys_become_records() -> None:
    auth = AuthSettings(
        keys=[{"name": "deploy", "role": "admin", "sha256": "a" * 64, "expires_at": "2020-01-01"}]
    )
    (record,) = records_from_settings(auth)
    assert record.source == "settings"
    assert record.expires_at == datetime(2020, 1, 1, tzinfo=UTC)  # naive times are UTC
    assert record.status() == "expired"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("30d", NOW + timedelta(days=30)),
        ("12h", NOW + timedelta(hours=12)),
        ("90m", NOW + timedelta(minutes=90)),
        ("45s", NOW + timedelta(seconds=45)),
        ("2w", NOW + timedelta(weeks=2)),
        (" 7D ", NOW + timedelta(days=7)),
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-07-01T08:30:00Z", datetime(2026, 7, 1, 8, 30, tzinfo=UTC)),
        ("2026-07-01T10:30:00+02:00", datetime(2026, 7, 1, 8, 30, tzinfo=UTC)),
        ("never", None),
    ],
)
def test_parse_expiry(spec: str, expected: datetime | None) -> None:
    assert parse_expiry(spec, now=NOW) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0d", "must be positive"),
        ("30", "use a duration"),
        ("thirty days", "use a duration"),
        ("2026-13-01", "use a duration"),
        ("2026-05-31", "already passed"),
        ("99999999999d", "too far"),
    ],
)
def test_parse_expiry_refuses_bad_input(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_expiry(spec, now=NOW)
