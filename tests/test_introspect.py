"""What a fitted estimator is: task kind, input schema, classes, fitted or not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlserve.errors import InvalidModelError
from mlserve.runtime import introspect


def test_detects_tabular_classifier_and_regressor(classifier: Any, regressor: Any) -> None:
    assert introspect.detect_task(classifier) == "tabular-classification"
    assert introspect.detect_task(regressor) == "tabular-regression"


def test_detects_text_classifier_pipeline(text_classifier: Any) -> None:
    assert introspect.is_text_model(text_classifier)
    assert introspect.detect_task(text_classifier) == "text-classification"


def test_task_override_wins(classifier: Any) -> None:
    assert introspect.detect_task(classifier, "tabular-regression") == "tabular-regression"


def test_text_regression_is_refused() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    model = Pipeline([("tfidf", TfidfVectorizer()), ("reg", Ridge())]).fit(
        ["good food", "bad food", "good service"], [1.0, 2.0, 3.0]
    )
    with pytest.raises(InvalidModelError, match="text models are served as classifiers"):
        introspect.detect_task(model)


def test_clusterers_and_outlier_detectors_are_detected() -> None:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import IsolationForest

    x = [[0.0], [1.0], [10.0], [11.0]]
    assert introspect.detect_task(KMeans(n_clusters=2, n_init=1, random_state=0).fit(x)) == (
        "clustering"
    )
    assert introspect.detect_task(IsolationForest(n_estimators=5).fit(x)) == "anomaly-detection"


def test_an_estimator_of_no_known_kind_asks_for_task() -> None:
    class Scorer:  # has predict, but is no scikit-learn classifier, regressor, ...
        def predict(self, x: Any) -> Any:
            return [0 for _ in x]

    with pytest.raises(InvalidModelError, match="--task"):
        introspect.detect_task(Scorer())


def test_input_schema_of_text_and_array_models(classifier: Any, text_classifier: Any) -> None:
    text = introspect.input_schema(text_classifier, "text-classification")
    assert (text.kind, text.feature_names, text.n_features) == ("text", None, None)
    tab = introspect.input_schema(classifier, "tabular-classification")
    assert (tab.kind, tab.feature_names, tab.n_features) == ("tabular", None, 2)


def test_input_schema_records_feature_names_in(classifier: Any) -> None:
    # What fitting on a DataFrame leaves behind (pandas is not a dependency).
    classifier.feature_names_in_ = np.array(["height", "weight"], dtype=object)
    schema = introspect.input_schema(classifier, "tabular-classification")
    assert schema.feature_names == ["height", "weight"]
    assert all(type(n) is str for n in schema.feature_names)
    assert schema.n_features == 2


def test_input_schema_of_a_model_without_feature_count_is_refused() -> None:
    class Bare:
        def predict(self, x: Any) -> Any:
            return x

    with pytest.raises(InvalidModelError, match="n_features_in_"):
        introspect.input_schema(Bare(), "tabular-classification")


def test_classes_are_plain_json_labels(classifier: Any, text_classifier: Any) -> None:
    labels = introspect.classes(classifier)
    assert labels == [0, 1]
    assert labels is not None
    assert all(type(c) is int for c in labels)  # not numpy.int64
    assert introspect.classes(text_classifier) == ["neg", "pos"]


def test_regressor_has_no_classes(regressor: Any) -> None:
    assert introspect.classes(regressor) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(np.int64(3), 3), (np.float32(0.5), 0.5), (np.str_("a"), "a"), (True, True), ("x", "x")],
)
def test_to_label_unwraps_numpy_scalars(value: Any, expected: Any) -> None:
    label = introspect.to_label(value)
    assert label == expected
    assert type(label) is type(expected)


def test_check_fitted_refuses_unfitted_estimator_and_pipeline() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(InvalidModelError, match="LogisticRegression is not fitted"):
        introspect.check_fitted(LogisticRegression())
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    with pytest.raises(InvalidModelError, match=r"Pipeline\[StandardScaler, LogisticRegression\]"):
        introspect.check_fitted(pipeline)


def test_check_fitted_accepts_fitted_models(classifier: Any, text_classifier: Any) -> None:
    introspect.check_fitted(classifier)
    introspect.check_fitted(text_classifier)


def test_describe_class_names_pipeline_steps(classifier: Any, text_classifier: Any) -> None:
    assert introspect.describe_class(classifier) == "LogisticRegression"
    assert (
        introspect.describe_class(text_classifier)
        == "Pipeline[TfidfVectorizer, LogisticRegression]"
    )
    assert type(introspect.final_step(text_classifier)).__name__ == "LogisticRegression"
