"""What the fork supervisor hands its workers, in process: Registry.preload keeps an estimator
that the next load of the same bytes takes (once), FileModels the same by path, and
prefork.preload reads the models a worker loads at startup (only the protected ones under a
memory budget; none that cannot be read)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve.config import Settings
from mlserve.registry import FileModels, Registry
from mlserve.registry.preloaded import PRELOADED
from mlserve.server.app import create_app
from mlserve.server.prefork import preload


@pytest.fixture(autouse=True)
def empty_handover() -> Iterator[None]:
    PRELOADED.clear()
    yield
    PRELOADED.clear()


def register_iris(registry: Registry, estimator: Any, name: str = "iris") -> Any:
    return registry.register_estimator(
        estimator, name=name, aliases=["production"], feature_names=IRIS_FEATURES
    )


def test_a_preloaded_version_is_taken_by_the_next_load_only(
    registry: Registry, iris_estimator: Any
) -> None:
    meta = register_iris(registry, iris_estimator)

    registry.preload(meta)
    kept = PRELOADED.take(("artifact", meta.format, meta.sha256))
    assert kept is not None
    PRELOADED.keep(("artifact", meta.format, meta.sha256), kept)

    first, second = registry.load(meta), registry.load(meta)

    assert first.estimator is kept
    assert second.estimator is not kept  # read from its artifact: no two runtimes share one
    assert len(PRELOADED) == 0


def test_another_version_is_not_taken(
    registry: Registry, iris_estimator: Any, svc_estimator: Any
) -> None:
    first = register_iris(registry, iris_estimator)
    second = register_iris(registry, svc_estimator)
    registry.preload(first)

    loaded = registry.load(second)

    assert type(loaded.estimator).__name__ == "SVC"
    assert len(PRELOADED) == 1  # still there for a load of version 1


def test_a_model_file_is_taken_without_reading_it_again(
    tmp_path: Path, iris_estimator: Any
) -> None:
    path = tmp_path / "iris.joblib"
    joblib.dump(iris_estimator, path)
    supervisor = FileModels([(None, path)])
    meta = supervisor.resolve("iris")
    supervisor.preload(meta)
    kept = supervisor.load(meta).estimator
    path.unlink()  # a worker that read it again would fail now

    worker = FileModels([(None, path)])

    assert worker.resolve("iris") == meta
    assert worker.load(meta).estimator is kept


def test_preload_reads_what_a_worker_loads_at_startup(
    registry: Registry,
    iris_estimator: Any,
    svc_estimator: Any,
    make_settings: Callable[..., Settings],
) -> None:
    register_iris(registry, iris_estimator)
    register_iris(registry, svc_estimator, name="svc")

    assert preload(make_settings()) == 2
    PRELOADED.clear()
    budget = make_settings(server={"max_loaded": 1, "pinned_models": ["svc"]})
    assert preload(budget) == 1  # the protected model; iris loads on its first request
    assert len(PRELOADED) == 1


def test_a_model_that_cannot_be_read_is_left_to_the_workers(
    registry: Registry, iris_estimator: Any, make_settings: Callable[..., Settings]
) -> None:
    meta = register_iris(registry, iris_estimator)
    registry.artifact_path(meta).write_bytes(b"not a pickle")

    assert preload(make_settings()) == 0
    app = create_app(make_settings())
    with TestClient(app):  # fails there, as without workers
        served = app.state.mlserve.manager.models["iris"]
    assert served.status == "failed"


def test_an_app_serves_the_preloaded_estimator(
    registry: Registry, iris_estimator: Any, make_settings: Callable[..., Settings]
) -> None:
    meta = register_iris(registry, iris_estimator)
    settings = make_settings()
    preload(settings)
    kept = PRELOADED.take(("artifact", meta.format, meta.sha256))
    PRELOADED.keep(("artifact", meta.format, meta.sha256), kept)

    app = create_app(settings)
    with TestClient(app) as client:
        answer = client.post("/api/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
        runtime = app.state.mlserve.manager.models["iris"].current

    assert answer.status_code == 200, answer.text
    assert runtime.model.estimator is kept
