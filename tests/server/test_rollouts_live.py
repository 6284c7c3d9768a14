"""Canary rollouts against a real `mlserve serve` process, with traffic from several clients
and steps of a second: a good candidate is promoted through every step without a failed
request, a failing one is rolled back at the first step, and one trained on flipped labels is
rolled back by the accuracy guard once the true labels come back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.metrics import value
from support.servers import MlserveProcess, running

from .rollout_live_helpers import build_registry, send_until_ended

pytestmark = pytest.mark.slow

CONFIG = {"traffic": {"rollout_interval_s": 0.2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    root = tmp_path_factory.mktemp("rollouts")
    registry = build_registry(root / "registry")
    with running(registry.root, root / "home", config=CONFIG) as proc:
        yield proc


def start(server: MlserveProcess, model: str, **plan: object) -> None:
    answer = server.put_json(f"/api/models/{model}/rollout", plan)
    assert answer.status_code == 201, answer.text


def production(server: MlserveProcess, model: str) -> int:
    aliases: dict[str, int] = server.get(f"/api/models/{model}").json()["all_aliases"]
    return aliases["production"]


def test_a_good_candidate_is_promoted_and_no_request_fails(server: MlserveProcess) -> None:
    start(server, "good", candidate=2, steps=[20, 50, 100], step_seconds=1.0, min_requests=15)
    final, traffic = send_until_ended([server.url], "good")

    assert final["status"] == "promoted", (final, server.output()[-3000:])
    assert traffic.failures == [] and set(traffic.statuses) == {200}
    assert traffic.versions[1] > 0 and traffic.versions[2] > 0
    events = [(e["event"], e["step"]) for e in final["events"]]
    assert events == [("started", 0), ("step", 1), ("step", 2), ("promoted", 2)]
    assert production(server, "good") == 2
    assert server.post("/api/predict", {"model": "good", "text": "great"}).json()["version"] == 2
    samples = server.metrics()
    assert value(samples, "mlserve_rollout_events_total", model="good", event="promoted") == 1


def test_a_candidate_that_answers_errors_is_rolled_back_at_the_first_step(
    server: MlserveProcess,
) -> None:
    start(server, "broken", candidate=2, steps=[50, 100], step_seconds=1.0, min_requests=20)
    final, traffic = send_until_ended([server.url], "broken", timeout_s=60)

    assert final["status"] == "rolled_back", final
    assert final["step"] == 0
    assert "error rate" in final["reason"]
    assert traffic.failures == []  # only the candidate's own 500s
    assert production(server, "broken") == 1
    after = server.post(
        "/api/predict", {"model": "broken", "features": {"sepal_length": -999.0, "sepal_width": 3,
                                                          "petal_length": 1.4, "petal_width": 0.2}}
    )  # fmt: skip
    assert (after.status_code, after.json()["version"]) == (200, 1)
    # What a CI pipeline runs: `status --wait` exits 1 for a rollback, and says why.
    waited = subprocess.run(
        [sys.executable, "-m", "mlserve", "rollout", "status", "broken", "--wait"]
        + ["--timeout", "30", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "error rate" in waited.stderr


def test_a_candidate_trained_on_flipped_labels_is_rolled_back_on_accuracy(
    server: MlserveProcess,
) -> None:
    start(
        server,
        "flipped",
        candidate=2,
        steps=[50, 100],
        step_seconds=1.0,
        min_requests=10,
        min_labels=20,
        guards={"max_error_rate": 0.01, "max_accuracy_drop": 0.05},
    )
    final, traffic = send_until_ended([server.url], "flipped", labels=True)

    assert final["status"] == "rolled_back", final
    assert "accuracy" in final["reason"]
    accuracy = final["figures"]["accuracy"]
    assert accuracy["status"] == "breached"
    assert accuracy["candidate"]["n"] >= 20 and accuracy["baseline"]["n"] >= 20
    assert accuracy["candidate"]["value"] < 0.5 < accuracy["baseline"]["value"]
    assert traffic.labels_sent >= 40
    assert production(server, "flipped") == 1
