"""Canary rollouts in one server process: the admin API's checks and answers, a good candidate
promoted step by step, a failing one rolled back, an abort. Real server processes, replicas
and the accuracy guard: test_rollouts_live.py and tests/redis/test_rollouts_replicas.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import FLOWERS, IRIS_FEATURES, tamper
from support.metrics import scrape, value
from support.wait import wait_for

from mlserve.keys import hash_key
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata, RolloutInfo

from . import flaky_models
from .conftest import error_of

ROUND_S = 0.05  # traffic.rollout_interval_s: rounds fast enough for a test
PATH = "/api/models/iris/rollout"
FLOWER = dict(zip(IRIS_FEATURES, FLOWERS[0], strict=True))


@pytest.fixture
def switch() -> Iterator[str]:
    name = uuid.uuid4().hex
    flaky_models.FAILING[name] = False  # registration tries the model
    yield name
    flaky_models.FAILING.pop(name, None)
    flaky_models.CALLS.pop(name, None)


@pytest.fixture
def iris_versions(
    registry: Registry,
    iris_meta: ModelMetadata,
    iris: tuple[Any, Any],
    iris_estimator: Any,
    switch: str,
) -> Registry:
    """iris 1 (production), 2 (the same model again) and 3 (fails while its switch is on)."""
    x, y = iris
    registry.register_estimator(iris_estimator, name="iris", feature_names=IRIS_FEATURES)
    flaky = flaky_models.FlakyClassifier(switch=switch).fit(x, y)
    registry.register_estimator(flaky, name="iris", feature_names=IRIS_FEATURES)
    return registry


@pytest.fixture
def server(iris_versions: Registry, serve: Callable[..., TestClient]) -> TestClient:
    return serve(raise_server_exceptions=False, traffic={"rollout_interval_s": ROUND_S})


def predict(client: TestClient, i: int) -> Any:
    return client.post(
        "/api/predict", json={"model": "iris", "features": FLOWER}, headers={"X-Client-ID": f"c{i}"}
    )


def drive(client: TestClient, *, until: Callable[[dict[str, Any]], bool], limit: int = 3000) -> Any:
    """Send predictions (one per client id) until the rollout satisfies `until`; bounded."""
    statuses: dict[int, int] = {}
    versions: set[int] = set()
    for i in range(limit):
        answer = predict(client, i)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code == 200:
            versions.add(answer.json()["version"])
        if i % 10 == 0:
            info = client.get(PATH).json()
            if until(info):
                return info, statuses, versions
    raise AssertionError(
        f"rollout did not get there in {limit} requests: {client.get(PATH).json()}"
    )


def test_a_good_candidate_is_promoted_through_every_step(server: TestClient) -> None:
    started = server.put(
        PATH, json={"candidate": 2, "steps": [25, 50, 100], "step_seconds": 0.1, "min_requests": 20}
    )
    assert started.status_code == 201, started.text
    info = RolloutInfo.model_validate(started.json())
    assert (info.status, info.baseline, info.candidate, info.weight) == ("running", 1, 2, 25.0)
    traffic = server.get("/api/models/iris/traffic").json()
    assert traffic["source"] == "rollout" and traffic["split"] == {"1": 75.0, "2": 25.0}

    final, statuses, versions = drive(server, until=lambda r: r["status"] != "running")

    assert final["status"] == "promoted", final
    assert statuses == {200: sum(statuses.values())}  # no request failed at any step change
    assert versions == {1, 2}
    assert [e["event"] for e in final["events"]] == ["started", "step", "step", "promoted"]
    assert [e["weight"] for e in final["events"]] == [25.0, 50.0, 100.0, 100.0]
    assert final["figures"]["error_rate"]["candidate"]["n"] >= 20
    assert iris_alias(server) == 2
    assert server.get("/api/models/iris/traffic").json()["split"] is None
    assert predict(server, 0).json()["version"] == 2
    samples = scrape(server)
    assert value(samples, "mlserve_rollout_events_total", model="iris", event="step") == 2
    assert value(samples, "mlserve_rollout_events_total", model="iris", event="promoted") == 1
    assert value(samples, "mlserve_rollout_weight_ratio", model="iris") == 0


def iris_alias(client: TestClient) -> int:
    aliases: dict[str, int] = client.get("/api/models/iris").json()["all_aliases"]
    return aliases["production"]


def test_a_failing_candidate_is_rolled_back_at_the_first_step(
    server: TestClient, switch: str
) -> None:
    flaky_models.FAILING[switch] = True
    started = server.put(PATH, json={"candidate": 3, "steps": [50, 100], "min_requests": 20})
    assert started.status_code == 201, started.text

    final, statuses, _ = drive(server, until=lambda r: r["status"] != "running", limit=500)

    assert final["status"] == "rolled_back", final
    assert final["step"] == 0
    assert "error rate" in final["reason"]
    assert final["figures"]["error_rate"]["status"] == "breached"
    assert statuses.get(500, 0) >= 1  # the candidate's own failures
    assert iris_alias(server) == 1
    assert server.get("/api/models/iris/traffic").json()["split"] is None
    after = [predict(server, i) for i in range(20)]
    assert {(a.status_code, a.json()["version"]) for a in after} == {(200, 1)}
    samples = scrape(server)
    assert value(samples, "mlserve_rollout_events_total", model="iris", event="rolled_back") == 1


def test_an_abort_restores_the_baseline_and_keeps_the_alias(server: TestClient) -> None:
    assert server.put(PATH, json={"candidate": 2, "step_seconds": 600}).status_code == 201
    conflict = server.put(PATH, json={"candidate": 2})
    assert error_of(conflict, 409, "rollout_conflict")["message"].startswith("model 'iris' has")
    manual = server.put("/api/models/iris/traffic", json={"split": {"1": 1, "2": 1}})
    error_of(manual, 409, "rollout_conflict")

    aborted = server.delete(PATH)
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted"
    assert aborted.json()["reason"] == "aborted by an admin"
    assert server.get("/api/models/iris/traffic").json()["split"] is None
    assert iris_alias(server) == 1
    error_of(server.delete(PATH), 409, "rollout_conflict")
    assert server.get(PATH).json()["status"] == "aborted"
    # A new rollout may start once the last one ended.
    assert server.put(PATH, json={"candidate": 2}).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"candidate": 1}, 409, "rollout_conflict"),  # already what production names
        ({"candidate": 9}, 404, None),
        ({"candidate": 2, "alias": "staging"}, 404, "not_found"),  # no such alias
        ({"candidate": 2, "steps": [50, 0, 100]}, 422, None),
        ({"candidate": 2, "steps": [5, 150]}, 422, None),
        ({"candidate": 2, "steps": []}, 422, None),
        ({"candidate": 2, "guards": {"max_error_rate": 2}}, 422, None),
        ({"candidate": 2, "surprise": 1}, 422, None),
    ],
)
def test_a_rollout_that_cannot_run_is_refused_with_a_reason(
    server: TestClient, body: dict[str, Any], status: int, code: str | None
) -> None:
    error_of(server.put(PATH, json=body), status, code)
    error_of(server.get(PATH), 404, "rollout_not_found")
    assert server.get("/api/models/iris/traffic").json()["split"] is None


def test_steps_are_sorted_and_end_at_100(server: TestClient) -> None:
    started = server.put(PATH, json={"candidate": 2, "steps": [50, 10, 50], "step_seconds": 600})
    assert started.status_code == 201, started.text
    assert started.json()["steps"] == [10.0, 50.0, 100.0]
    assert started.json()["weight"] == 10.0


def test_an_unknown_model_has_no_rollout(server: TestClient) -> None:
    error_of(server.put("/api/models/nope/rollout", json={"candidate": 2}), 404)
    error_of(server.get("/api/models/nope/rollout"), 404)
    error_of(server.delete("/api/models/nope/rollout"), 404)


def test_starting_a_rollout_needs_the_admin_role(
    iris_versions: Registry, serve: Callable[..., TestClient]
) -> None:
    keys = [
        {"name": "app", "sha256": hash_key("p" * 32), "role": "predict"},
        {"name": "ops", "sha256": hash_key("a" * 32), "role": "admin"},
    ]
    client = serve(auth={"keys": keys})
    body = {"candidate": 2, "step_seconds": 600}
    error_of(client.put(PATH, json=body, headers={"X-API-Key": "p" * 32}), 403)
    assert client.put(PATH, json=body, headers={"X-API-Key": "a" * 32}).status_code == 201
    assert client.get(PATH, headers={"X-API-Key": "p" * 32}).json()["status"] == "running"
    error_of(client.delete(PATH, headers={"X-API-Key": "p" * 32}), 403)


def test_a_candidate_that_no_longer_loads_is_rolled_back(
    server: TestClient, iris_versions: Registry
) -> None:
    assert server.put(PATH, json={"candidate": 2, "step_seconds": 600}).status_code == 201
    # This replica loses the candidate and cannot load it again (its artifact changed).
    tamper(iris_versions, iris_versions.metadata("iris", 2))
    served = server.app.state.mlserve.manager.served("iris")  # type: ignore[attr-defined]
    served.extra.pop(2)

    final = wait_for(
        lambda: (r := server.get(PATH).json())["status"] != "running" and r,
        "the rollout ended",
        30,
    )

    assert final["status"] == "rolled_back"
    assert "version 2 cannot be loaded" in final["reason"]
    assert server.get("/api/models/iris/traffic").json()["split"] is None
    assert predict(server, 1).json()["version"] == 1
