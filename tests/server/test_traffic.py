"""A/B splits: deterministic per client, proportional over many clients, set by settings or
at runtime (PUT/GET/DELETE /api/models/{name}/traffic); explicit versions override."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import FLOWERS
from support.metrics import scrape, value

from mlserve.keys.auth import Principal
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.server.scope import client_key
from mlserve.serving.traffic import Split, bucket

from .conftest import error_of
from .traffic_helpers import PATHS, tree_version

FLOWER = FLOWERS[0]


@pytest.fixture
def two_versions(
    iris_meta: ModelMetadata, registry: Registry, iris: tuple[Any, Any]
) -> ModelMetadata:
    """iris:1 (production) and iris:2."""
    return tree_version(registry, iris)


@pytest.fixture
def split_client(two_versions: ModelMetadata, serve: Callable[..., TestClient]) -> TestClient:
    return serve(traffic={"splits": {"iris": {"1": 90, "2": 10}}})


def _version(client: TestClient, client_id: str | None = None, **body: Any) -> int:
    headers = {"X-Client-ID": client_id} if client_id is not None else {}
    response = client.post("/api/predict", json={"features": FLOWER, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


# ---------------------------------------------------------------------------- assignment
def test_split_proportions_hold_over_20000_distinct_clients() -> None:
    split = Split.parse({"1": 90, "2": 10})

    counts = collections.Counter(split.pick(bucket("iris", f"id:user-{i}")) for i in range(20_000))

    assert abs(counts[2] / 20_000 - 0.10) <= 0.01, counts


def test_the_server_serves_each_client_the_version_its_bucket_picks(
    split_client: TestClient,
) -> None:
    # The proportions are the bucket's (above); over HTTP, each answer must be its pick.
    split = Split.parse({"1": 90, "2": 10})
    clients = [f"user-{i}" for i in range(200)]

    served = {c: _version(split_client, c) for c in clients}

    assert served == {c: split.pick(bucket("iris", f"id:{c}")) for c in clients}
    assert set(served.values()) == {1, 2}
    samples = scrape(split_client)
    counted = value(samples, "mlserve_predictions_total", model="iris", version="2")
    assert counted == list(served.values()).count(2)


def test_a_client_always_gets_the_same_version(split_client: TestClient) -> None:
    for i in range(60):
        seen = {_version(split_client, f"client-{i}") for _ in range(4)}
        assert len(seen) == 1, (i, seen)


@pytest.mark.parametrize("path", PATHS)
def test_fast_path_and_route_assign_a_client_the_same_version(
    split_client: TestClient, path: str
) -> None:
    for i in range(40):
        headers = {"X-Client-ID": f"c{i}", **PATHS[path]}
        response = split_client.post("/api/predict", json={"features": FLOWER}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == _version(split_client, f"c{i}")


def test_batch_requests_follow_the_split_too(split_client: TestClient) -> None:
    for i in range(40):
        response = split_client.post(
            "/api/predict/batch", json={"records": FLOWERS}, headers={"X-Client-ID": f"c{i}"}
        )
        assert response.json()["version"] == _version(split_client, f"c{i}")


def test_an_explicit_version_or_alias_overrides_the_split(split_client: TestClient) -> None:
    # Clients the split sends to the other version than the one each request names.
    split = Split.parse({"1": 90, "2": 10})
    ids = [f"user-{i}" for i in range(2000)]
    to_1 = [c for c in ids if split.pick(bucket("iris", f"id:{c}")) == 1][:20]
    to_2 = [c for c in ids if split.pick(bucket("iris", f"id:{c}")) == 2][:20]

    assert {_version(split_client, c, model="iris:1") for c in to_2} == {1}
    assert {_version(split_client, c, model="iris:2") for c in to_1} == {2}
    assert {_version(split_client, c, model="iris", model_version=2) for c in to_1} == {2}
    assert {_version(split_client, c, model="iris@production") for c in to_2} == {1}


def test_without_a_client_id_the_client_address_decides(split_client: TestClient) -> None:
    # TestClient always comes from the same address: one version for all of its requests.
    assert len({_version(split_client) for _ in range(20)}) == 1


def test_client_key_prefers_header_then_principal_then_address() -> None:
    principal = Principal(name="ci", role="predict", kind="api_key")
    scope: dict[str, Any] = {
        "headers": [(b"x-client-id", b"alice")],
        "state": {"principal": principal},
        "client": ("10.0.0.1", 5000),
    }
    assert client_key(scope) == "id:alice"
    scope["headers"] = []
    assert client_key(scope) == "principal:api_key:ci"
    scope["state"] = {}
    assert client_key(scope) == "addr:10.0.0.1"


def test_buckets_are_stable_across_processes_and_independent_per_model() -> None:
    # Not Python's salted hash(): every replica puts a client in the same bucket.
    assert bucket("iris", "id:alice") == pytest.approx(0.4298277806, abs=1e-9)
    assert bucket("iris", "id:alice") != bucket("sentiment", "id:alice")


def test_split_weights_need_not_add_up_to_100() -> None:
    split = Split.parse({"3": 3, "4": 1})
    assert split.pick(0.74) == 3
    assert split.pick(0.76) == 4
    assert Split.parse({"3": 1, "4": 0}).versions == (3,)


# ---------------------------------------------------------------------------- admin endpoint
def test_put_get_delete_traffic_at_runtime(
    two_versions: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    assert client.get("/api/models/iris/traffic").json() == {
        "model": "iris",
        "split": None,
        "shadow": None,
        "serving_version": 1,
        "source": None,
    }

    put = client.put("/api/models/iris/traffic", json={"split": {"1": 50, "2": 50}})

    assert put.status_code == 200, put.text
    assert put.json() == {
        "model": "iris",
        "split": {"1": 50.0, "2": 50.0},
        "shadow": None,
        "serving_version": 1,
        "source": "runtime",
    }
    assert client.get("/api/models/iris/traffic").json() == put.json()
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}["iris"]
    assert listed["loaded_versions"] == [1, 2]  # preloaded before traffic arrives
    counts = collections.Counter(_version(client, f"u{i}") for i in range(400))
    assert 140 <= counts[2] <= 260, counts

    cleared = client.delete("/api/models/iris/traffic")

    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["split"] is None
    assert cleared.json()["source"] is None
    assert {_version(client, f"u{i}") for i in range(100)} == {1}


def test_settings_splits_apply_from_the_first_request(split_client: TestClient) -> None:
    info = split_client.get("/api/models/iris/traffic").json()
    assert info["split"] == {"1": 90.0, "2": 10.0}
    assert info["source"] == "settings"


def test_a_split_naming_an_unknown_version_is_refused_and_nothing_changes(
    two_versions: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    error = error_of(
        client.put("/api/models/iris/traffic", json={"split": {"1": 50, "9": 50}}),
        404,
        "model_not_found",
    )
    assert "version 9" in error["message"]
    assert client.get("/api/models/iris/traffic").json()["split"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"split": {"one": 50}},
        {"split": {"²": 50}},
        {"split": {"1": 1e308, "2": 1e308}},
        {"split": {"1": -5, "2": 10}},
        {"split": {"1": 0, "2": 0}},
        {"split": {}},
        {"split": {"1": 50}, "shadow": 0},
        {"split": {"1": 50}, "extra": True},
    ],
)
def test_invalid_traffic_bodies_are_422(
    two_versions: ModelMetadata, serve: Callable[..., TestClient], body: dict[str, Any]
) -> None:
    client = serve()
    error_of(client.put("/api/models/iris/traffic", json=body), 422)
    assert client.get("/api/models/iris/traffic").json()["split"] is None


def test_traffic_of_an_unknown_model_is_404(client: TestClient) -> None:
    error_of(client.get("/api/models/nosuch/traffic"), 404, "model_not_found")
    error_of(client.put("/api/models/nosuch/traffic", json={"split": {"1": 1}}), 404)
    error_of(client.delete("/api/models/nosuch/traffic"), 404)


def test_invalid_split_settings_are_a_config_error(
    two_versions: ModelMetadata, make_settings: Callable[..., Any]
) -> None:
    from mlserve.errors import ConfigError
    from mlserve.server.app import create_app

    with pytest.raises(ConfigError, match="traffic.splits.iris"):
        create_app(make_settings(traffic={"splits": {"iris": {"latest": 100}}}))


def test_a_split_version_that_is_gone_falls_back_to_the_serving_version(
    two_versions: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve(traffic={"splits": {"iris": {"1": 50, "7": 50}}})
    assert {_version(client, f"u{i}") for i in range(100)} == {1}


def test_a_split_survives_a_swap_of_the_serving_version(
    two_versions: ModelMetadata, registry: Registry, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    client.put("/api/models/iris/traffic", json={"split": {"1": 50, "2": 50}})
    before = {f"u{i}": _version(client, f"u{i}") for i in range(100)}
    registry.set_alias("iris", "production", 2)
    assert client.post("/api/models/iris/reload").json()["version"] == 2

    after = {c: _version(client, c) for c in before}

    assert after == before  # the split pins its versions; v1 stays loaded
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}["iris"]
    assert listed["serving_version"] == 2
    assert listed["loaded_versions"] == [1, 2]
