"""Server fixtures: tiny models fitted here, a per-test registry, apps run with their lifespan.
(The suite's conftest keeps MLSERVE_* settings from outside out of every test.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import (
    IRIS_FEATURES,
    IRIS_METRICS,
    SENTENCES,
    TEXT_METRICS,
)
from support.data import iris as iris_data
from support.data import text_estimator as fit_text_estimator

from mlserve.config import Settings, load_settings
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.server.app import create_app

from . import broken_models
from .broken_models import BrokenClassifier, GatedClassifier, PoisonableClassifier


# ---------------------------------------------------------------------------- fitted estimators
@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    """Iris features and string labels (setosa, versicolor, virginica)."""
    return iris_data()


@pytest.fixture(scope="session")
def text_estimator() -> Any:
    """TF-IDF + LogisticRegression over 30 sentences in 3 classes."""
    return fit_text_estimator(SENTENCES)


@pytest.fixture(scope="session")
def iris_estimator(iris: tuple[Any, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    return LogisticRegression(max_iter=1000).fit(x, y)


@pytest.fixture(scope="session")
def regression_estimator(iris: tuple[Any, Any]) -> Any:
    """Petal width from the other three iris measurements (no predict_proba)."""
    from sklearn.linear_model import LinearRegression

    x, _ = iris
    return LinearRegression().fit(x[:, :3], x[:, 3])


@pytest.fixture(scope="session")
def svc_estimator(iris: tuple[Any, Any]) -> Any:
    """An SVC without probability=True: predict only."""
    from sklearn.svm import SVC

    x, y = iris
    return SVC().fit(x, y)


def _fit_tabular(estimator: Any, iris: tuple[Any, Any]) -> Any:
    x, y = iris
    return estimator.fit(x, y)


@pytest.fixture(scope="session")
def broken_estimator(iris: tuple[Any, Any]) -> Any:
    return _fit_tabular(BrokenClassifier(), iris)


@pytest.fixture(scope="session")
def poisonable_estimator(iris: tuple[Any, Any]) -> Any:
    return _fit_tabular(PoisonableClassifier(poison=-999.0), iris)


@pytest.fixture
def gated_estimator(iris: tuple[Any, Any]) -> Callable[[str], Any]:
    """A classifier that waits on broken_models.GATES[gate] inside predict."""
    return lambda gate: _fit_tabular(GatedClassifier(gate=gate), iris)


@pytest.fixture
def gate() -> Iterator[tuple[str, broken_models.Gate]]:
    """(name, gate) for gated_estimator(name): a predict call waits until gate.release is set
    (set at the end of the test, whatever happened)."""
    name = uuid.uuid4().hex
    broken_models.GATES[name] = held = broken_models.Gate()
    yield name, held
    held.release.set()
    broken_models.GATES.pop(name, None)


# ---------------------------------------------------------------------------- registry and apps
@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """An empty registry in the test's temporary folder."""
    return Registry(tmp_path / "registry")


@pytest.fixture
def register(registry: Registry) -> Callable[..., ModelMetadata]:
    """register(estimator, name, **kwargs): add a version with the production alias. The
    models of broken_models fail, block or count calls on purpose: they are registered as
    `--no-check` would, without the smoke prediction."""

    def add(estimator: Any, name: str, **kwargs: Any) -> ModelMetadata:
        kwargs.setdefault("aliases", ["production"])
        kwargs.setdefault("check", not isinstance(estimator, broken_models._Fitted))
        return registry.register_estimator(estimator, name=name, **kwargs)

    return add


@pytest.fixture
def text_meta(register: Callable[..., ModelMetadata], text_estimator: Any) -> ModelMetadata:
    return register(text_estimator, "sentiment", metrics=TEXT_METRICS)


@pytest.fixture
def iris_meta(register: Callable[..., ModelMetadata], iris_estimator: Any) -> ModelMetadata:
    return register(iris_estimator, "iris", metrics=IRIS_METRICS, feature_names=IRIS_FEATURES)


@pytest.fixture
def all_models(
    register: Callable[..., ModelMetadata],
    text_meta: ModelMetadata,
    iris_meta: ModelMetadata,
    regression_estimator: Any,
    svc_estimator: Any,
) -> dict[str, ModelMetadata]:
    """sentiment (text), iris (tabular, named features), petal (regression), svc (predict only)."""
    return {
        "sentiment": text_meta,
        "iris": iris_meta,
        "petal": register(
            regression_estimator, "petal", feature_names=IRIS_FEATURES[:3], metrics={"r2": 0.93}
        ),
        "svc": register(svc_estimator, "svc", feature_names=IRIS_FEATURES),
    }


@pytest.fixture
def make_settings(tmp_path: Path, registry: Registry) -> Callable[..., Settings]:
    """Settings over the test registry; keyword sections override (server={...}, ...)."""

    def build(**sections: Any) -> Settings:
        return load_settings(
            None, home=str(tmp_path / "home"), registry={"path": str(registry.root)}, **sections
        )

    return build


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """serve(raise_server_exceptions=True, **sections): a started TestClient (lifespan run)."""
    with ExitStack() as stack:

        def start(*, raise_server_exceptions: bool = True, **sections: Any) -> TestClient:
            app = create_app(make_settings(**sections))
            client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
            return stack.enter_context(client)

        yield start


@pytest.fixture
def client(all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]) -> TestClient:
    """A server over all four good models (no default model: requests name one)."""
    return serve(raise_server_exceptions=False)


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the one error shape and status; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)
