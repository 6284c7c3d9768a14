"""LoadedModel: input validation against the model's schema, and what predict reports."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from mlserve.errors import InvalidInputError
from mlserve.runtime import introspect
from mlserve.runtime.model import LoadedModel
from mlserve.schemas import InputSchema, ModelMetadata

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _meta(estimator: Any, *, feature_names: list[str] | None = FEATURES) -> ModelMetadata:
    """Metadata as the registry would record it for `estimator`."""
    task = introspect.detect_task(estimator)
    schema = introspect.input_schema(estimator, task)
    if schema.kind == "tabular" and feature_names is not None:
        schema = InputSchema(
            kind="tabular", feature_names=feature_names, n_features=len(feature_names)
        )
    return ModelMetadata(
        name="m",
        version=3,
        created_at=datetime.now(UTC),
        source="test",
        sha256="0" * 64,
        size_bytes=1,
        python_version="3",
        sklearn_version="1",
        joblib_version="1",
        estimator=type(estimator).__name__,
        task=task,
        input_schema=schema,
        classes=introspect.classes(estimator) if task != "tabular-regression" else None,
        has_predict_proba=callable(getattr(estimator, "predict_proba", None))
        and task != "tabular-regression",
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Fitting tiny models on many OpenMP/BLAS threads is slower on a busy machine, not faster."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target_names[data.target]


@pytest.fixture(scope="module")
def logistic(iris: tuple[Any, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(*iris)


@pytest.fixture
def tabular(logistic: Any) -> LoadedModel:
    return LoadedModel(logistic, _meta(logistic))


@pytest.fixture(scope="module")
def text_pipeline() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = ["good great", "bad awful", "great fine", "awful terrible", "nice good", "bad"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(
        texts, labels
    )


@pytest.fixture
def text(text_pipeline: Any) -> LoadedModel:
    return LoadedModel(text_pipeline, _meta(text_pipeline), max_text_length=20)


# ---------------------------------------------------------------------------- validation
def test_prepare_orders_named_features_as_the_model_expects(tabular: LoadedModel) -> None:
    row = tabular.prepare(
        features={"petal_width": 4, "sepal_length": 1, "petal_length": 3, "sepal_width": 2}
    )

    assert row == [1.0, 2.0, 3.0, 4.0]


def test_prepare_accepts_a_list_in_model_order(tabular: LoadedModel) -> None:
    assert tabular.prepare(features=[1, 2.5, 3, 4]) == [1.0, 2.5, 3.0, 4.0]


@pytest.mark.parametrize(
    ("features", "fragments"),
    [
        ([1, 2, 3], ["3 values", "expects 4", *FEATURES]),
        ([1, 2, 3, 4, 5], ["5 values", *FEATURES]),
        ({"sepal_length": 1, "sepal_width": 2, "petal_length": 3}, ["missing petal_width"]),
        (
            {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4, "x": 1},
            ["unknown x", *FEATURES],
        ),
        ([1, "2", 3, 4], ["features.sepal_width", "number"]),
        ([1, True, 3, 4], ["features.sepal_width", "number"]),
        ([math.inf, 2, 3, 4], ["features.sepal_length", "finite"]),
        ("1,2,3,4", ["features", "list"]),
    ],
)
def test_prepare_features_rejects_what_does_not_fit_naming_the_problem(
    tabular: LoadedModel, features: Any, fragments: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        tabular.prepare(features=features)

    for fragment in fragments:
        assert fragment in caught.value.message, (fragment, caught.value.message)
    assert caught.value.status_code == 422


def test_prepare_names_the_field_it_was_given(tabular: LoadedModel) -> None:
    with pytest.raises(InvalidInputError, match=r"records\.7"):
        tabular.prepare(features=[1, 2], field="records.7")


def test_missing_values_refused_by_the_model_are_invalid_input_naming_the_features(
    tabular: LoadedModel,
) -> None:
    rows = [tabular.prepare(features=[1, None, 3, None]), tabular.prepare(features=[1, 2, 3, 4])]

    with pytest.raises(InvalidInputError) as caught:
        tabular.predict(rows)

    assert "missing values" in caught.value.message
    assert "sepal_width, petal_width" in caught.value.message
    assert caught.value.status_code == 422


def test_a_model_error_on_complete_input_is_not_blamed_on_the_input(logistic: Any) -> None:
    clf = copy.deepcopy(logistic)
    model = LoadedModel(clf, _meta(clf))
    clf.coef_ = clf.coef_[:, :2]  # broken after loading: raises ValueError on any input

    with pytest.raises(ValueError):
        model.predict([[1.0, 2.0, 3.0, 4.0]])


def test_prepare_passes_missing_values_to_a_model_that_handles_them(
    iris: tuple[Any, Any],
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    hgb = HistGradientBoostingClassifier(max_iter=3).fit(*iris)
    model = LoadedModel(hgb, _meta(hgb))

    row = model.prepare(features=[1, None, 3, 4])

    assert math.isnan(row[1])
    assert model.predict([row])[0].label in set(iris[1])


def test_prepare_text_checks_type_and_length(text: LoadedModel) -> None:
    assert text.prepare(text="x" * 20) == "x" * 20
    with pytest.raises(InvalidInputError, match="21 characters; the limit is 20"):
        text.prepare(text="x" * 21)
    with pytest.raises(InvalidInputError, match="'text' must be a string"):
        text.prepare(text=42)


def test_text_model_refuses_features_and_tabular_model_refuses_text(
    text: LoadedModel, tabular: LoadedModel
) -> None:
    with pytest.raises(InvalidInputError, match="takes text"):
        text.prepare(features=[1, 2])
    with pytest.raises(InvalidInputError, match="is tabular") as caught:
        tabular.prepare(text="hello")
    assert "sepal_length" in caught.value.message


def test_prepare_without_input_says_what_the_model_needs(
    text: LoadedModel, tabular: LoadedModel
) -> None:
    with pytest.raises(InvalidInputError, match="needs 'text'"):
        text.prepare()
    with pytest.raises(InvalidInputError, match="needs 'features'"):
        tabular.prepare()


def test_named_features_need_feature_names(logistic: Any) -> None:
    model = LoadedModel(logistic, _meta(logistic, feature_names=None))

    assert model.prepare(features=[1, 2, 3, 4]) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(InvalidInputError, match="no feature names"):
        model.prepare(features={"a": 1})


# ---------------------------------------------------------------------------- prediction
def test_predict_reports_the_estimators_probabilities(
    tabular: LoadedModel, logistic: Any, iris: tuple[Any, Any]
) -> None:
    x = iris[0][::10]

    out = tabular.predict(x.tolist())

    proba = logistic.predict_proba(x)
    for p, row in zip(out, proba, strict=True):
        assert p.confidence == pytest.approx(row.max())
        assert p.probabilities is not None
        assert list(p.probabilities) == list(logistic.classes_)
        assert list(p.probabilities.values()) == pytest.approx(row.tolist())
    assert [p.label for p in out] == logistic.predict(x).tolist()


def test_text_predictions_skip_only_checks_that_cannot_fail_and_leave_the_config_as_it_was(
    text: LoadedModel, tabular: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text batch skips scikit-learn's NaN scan of the matrix its vectorizer made from
    strings; a tabular one keeps it (missing values are named from it, test above). Neither
    changes scikit-learn's configuration outside the call."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    seen: list[dict[str, Any]] = []
    original = LogisticRegression.predict_proba

    def recording(self: Any, x: Any) -> Any:  # the final step of both: its config, then it
        seen.append(sklearn.get_config())
        return original(self, x)

    texts = ["good great", "awful", "fine nice"]
    expected = text.estimator.predict_proba(texts)
    monkeypatch.setattr(LogisticRegression, "predict_proba", recording)

    out = text.predict([text.prepare(text=t) for t in texts])
    tabular.predict([[5.1, 3.5, 1.4, 0.2]])

    text_config, tabular_config = seen
    assert text_config["assume_finite"] is True
    assert tabular_config["assume_finite"] is False
    assert text_config["skip_parameter_validation"] is True
    assert tabular_config["skip_parameter_validation"] is True
    for p, row in zip(out, expected, strict=True):  # the same answers all the same
        assert p.probabilities is not None
        assert list(p.probabilities.values()) == pytest.approx(row.tolist())
    assert sklearn.get_config()["assume_finite"] is False
    assert sklearn.get_config()["skip_parameter_validation"] is False


@pytest.mark.parametrize("kind", ["logistic", "hgb", "forest", "text"])
def test_labels_from_proba_match_the_estimators_predict_on_real_data(
    kind: str, iris: tuple[Any, Any], text_pipeline: Any, logistic: Any
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    x, y = iris
    rng = np.random.default_rng(0)
    noisy = x + rng.normal(scale=0.3, size=x.shape)  # points near the decision boundaries
    if kind == "text":
        estimator: Any = text_pipeline
        rows: Any = ["good", "awful bad", "fine terrible", "unknown words", "great awful"]
    else:
        if kind == "logistic":
            estimator = logistic
        elif kind == "hgb":
            estimator = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y)
        else:
            estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
        rows = noisy.tolist()
    model = LoadedModel(estimator, _meta(estimator))

    labels = [p.label for p in model.predict(rows)]

    assert model.labels_from_proba
    assert labels == estimator.predict(rows if kind == "text" else noisy).tolist()


def test_svc_with_probability_labels_come_from_predict(iris: tuple[Any, Any]) -> None:
    from sklearn.svm import SVC

    x, y = iris
    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates SVC(probability=True); models saved with it still serve.
        warnings.filterwarnings("ignore", "The `probability` parameter", FutureWarning)
        svc = SVC(probability=True, random_state=0).fit(x, y)
    model = LoadedModel(svc, _meta(svc))

    out = model.predict(x.tolist())

    assert model.has_proba
    assert not model.labels_from_proba
    assert [p.label for p in out] == svc.predict(x).tolist()
    proba = svc.predict_proba(x)
    assert [p.confidence for p in out] == pytest.approx(proba.max(axis=1).tolist())


def test_predict_only_classifier_has_no_confidence(iris: tuple[Any, Any]) -> None:
    from sklearn.svm import SVC

    svc = SVC().fit(*iris)
    model = LoadedModel(svc, _meta(svc))

    out = model.predict(iris[0][:3].tolist())

    assert not model.has_proba
    assert all(p.confidence is None and p.probabilities is None for p in out)
    assert [p.label for p in out] == svc.predict(iris[0][:3]).tolist()


def test_regressor_predicts_plain_floats(iris: tuple[Any, Any]) -> None:
    from sklearn.linear_model import LinearRegression

    x = iris[0]
    reg = LinearRegression().fit(x[:, :3], x[:, 3])
    model = LoadedModel(reg, _meta(reg, feature_names=FEATURES[:3]))

    out = model.predict(x[:4, :3].tolist())

    assert [p.label for p in out] == pytest.approx(reg.predict(x[:4, :3]).tolist())
    assert all(type(p.label) is float and p.confidence is None for p in out)


def test_integer_classes_become_plain_ints(iris: tuple[Any, Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    x = iris[0]
    y = (x[:, 2] > 3).astype(int)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    model = LoadedModel(clf, _meta(clf))

    out = model.predict(x[:2].tolist())

    assert all(type(p.label) is int for p in out)
    assert out[0].probabilities is not None and set(out[0].probabilities) == {"0", "1"}


def test_sample_input_is_a_valid_input(tabular: LoadedModel, text: LoadedModel) -> None:
    assert len(tabular.predict([tabular.prepare(features=tabular.sample_input())])) == 1
    assert len(text.predict([text.prepare(text=text.sample_input())])) == 1
