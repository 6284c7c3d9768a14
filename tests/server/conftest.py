"""Server fixtures: tiny models fitted here, a per-test registry, apps run with their lifespan."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # Starlette warns (a UserWarning subclass, which pyproject's DeprecationWarning filter does
    # not match) that driving its TestClient with httpx is deprecated; it works as documented.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

from mlserve.config import Settings, load_settings
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata
from mlserve.server.app import create_app

from . import broken_models
from .broken_models import BrokenClassifier, GatedClassifier, PoisonableClassifier

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

SENTENCES = {
    "positive": [
        "I love this product, it works great",
        "What a wonderful and pleasant experience",
        "Excellent service and friendly staff",
        "The food was delicious and fresh",
        "Fantastic quality, I am very happy",
        "Great value, would buy again",
        "The staff were lovely and helpful",
        "Superb delivery, arrived early and intact",
        "Really enjoyed it, brilliant work",
        "Happy with the purchase, excellent choice",
    ],
    "negative": [
        "Terrible experience, I hate it",
        "The product broke after one day, awful",
        "Rude staff and horrible service",
        "The food was cold and disgusting",
        "Worst purchase ever, complete waste of money",
        "Refund took weeks, very disappointed",
        "Awful quality, it fell apart",
        "Never again, a bad and painful experience",
        "The delivery was late and the box was damaged",
        "Horrible smell and broken parts, angry",
    ],
    "neutral": [
        "The package arrived on Monday",
        "It is a blue box with a lid",
        "The store opens at nine in the morning",
        "I ordered two items last week",
        "The manual has twelve pages",
        "The meeting is scheduled for Tuesday",
        "It comes in three sizes",
        "The office is on the second floor",
        "The train leaves from platform four",
        "The report lists the quarterly figures",
    ],
}
TEXT_METRICS = {"accuracy": 0.8667, "macro_f1": 0.8512, "n_test": 15}
IRIS_METRICS = {"accuracy": 0.9737, "macro_f1": 0.9733, "n_test": 38}


# ---------------------------------------------------------------------------- fitted estimators
@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    """Iris features and string labels (setosa, versicolor, virginica)."""
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target_names[data.target]


@pytest.fixture(scope="session")
def text_estimator() -> Any:
    """TF-IDF + LogisticRegression over 30 sentences in 3 classes."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = [t for ts in SENTENCES.values() for t in ts]
    labels = [label for label, ts in SENTENCES.items() for _ in ts]
    pipe = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=1000))])
    return pipe.fit(texts, labels)


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
    """register(estimator, name, **kwargs): add a version with the production alias."""

    def add(estimator: Any, name: str, **kwargs: Any) -> ModelMetadata:
        kwargs.setdefault("aliases", ["production"])
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


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLSERVE_* variable from the outside leaks in."""
    for key in list(os.environ):
        if key.upper().startswith("MLSERVE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLSERVE_HOME", str(tmp_path / "home"))


def tamper(registry: Registry, meta: ModelMetadata) -> None:
    """Flip bytes in the middle of a registered artifact (same size, different sha256)."""
    path = registry.artifact_path(meta)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


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
