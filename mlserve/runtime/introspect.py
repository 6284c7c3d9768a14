"""What a fitted estimator is: task, input schema, classes. Imports scikit-learn lazily."""

from __future__ import annotations

from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.schemas import InputSchema, Label, TaskKind

TEXT_VECTORIZERS = ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer")
TASKS: tuple[TaskKind, ...] = (
    "text-classification",
    "tabular-classification",
    "tabular-regression",
    "tabular-multilabel",
    "anomaly-detection",
    "clustering",
)


def to_label(value: Any) -> Label:
    """A numpy scalar or Python value as a plain JSON-able label."""
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def steps(estimator: Any) -> list[Any]:
    """The steps of a Pipeline (recursively flattened at the front), or the estimator itself."""
    inner = getattr(estimator, "steps", None)
    if isinstance(inner, list) and inner:
        return [step for _, step in inner]
    return [estimator]


def final_step(estimator: Any) -> Any:
    return steps(estimator)[-1]


def describe_class(estimator: Any) -> str:
    parts = [type(step).__name__ for step in steps(estimator)]
    if len(parts) == 1:
        return parts[0]
    return f"{type(estimator).__name__}[{', '.join(parts)}]"


def is_text_model(estimator: Any) -> bool:
    first = steps(estimator)[0]
    return any(cls.__name__ in TEXT_VECTORIZERS for cls in type(first).__mro__)


def is_multilabel(estimator: Any) -> bool:
    """A classifier fitted on several outputs (its classes_ is one array per output)."""
    found = getattr(final_step(estimator), "classes_", None)
    return isinstance(found, list) and len(found) > 0 and hasattr(found[0], "__len__")


def detect_task(estimator: Any, override: TaskKind | None = None) -> TaskKind:
    """What the model does, from its scikit-learn type; `override` wins when given."""
    if override is not None:
        return override
    text = is_text_model(estimator)
    kind: TaskKind | None = None
    try:
        kind = _sklearn_kind(estimator, text)
    except (AttributeError, TypeError):  # no scikit-learn estimator tags: no kind to read
        kind = None
    if kind in ("text-classification", "tabular-classification"):
        return kind
    if kind is None:
        raise InvalidModelError(
            f"cannot tell what {describe_class(estimator)} predicts (not a scikit-learn "
            "classifier, regressor, outlier detector or clusterer); pass --task " + "|".join(TASKS)
        )
    if text:
        raise InvalidModelError(
            f"text models are served as classifiers; {describe_class(estimator)} is a "
            f"{kind.removeprefix('tabular-')} model: register a text classifier or a "
            "tabular model"
        )
    return kind


def _sklearn_kind(estimator: Any, text: bool) -> TaskKind | None:
    from sklearn.base import is_classifier, is_clusterer, is_outlier_detector, is_regressor

    kind: TaskKind | None = None
    if is_classifier(estimator):
        if not is_multilabel(estimator):
            return "text-classification" if text else "tabular-classification"
        kind = "tabular-multilabel"
    elif is_regressor(estimator):
        kind = "tabular-regression"
    elif is_outlier_detector(estimator):
        kind = "anomaly-detection"
    elif is_clusterer(estimator):
        kind = "clustering"
    return kind


def input_schema(estimator: Any, task: TaskKind) -> InputSchema:
    if task == "text-classification":
        return InputSchema(kind="text")
    names = getattr(estimator, "feature_names_in_", None)
    n_features = getattr(estimator, "n_features_in_", None)
    feature_names = [str(n) for n in names] if names is not None else None
    if n_features is None and feature_names is not None:
        n_features = len(feature_names)
    if n_features is None:
        raise InvalidModelError(
            f"{describe_class(estimator)} does not record how many features it takes "
            "(no n_features_in_): is it fitted?"
        )
    return InputSchema(
        kind="tabular",
        feature_names=feature_names,
        n_features=int(n_features),
        dataframe=feature_names is not None,
    )


def score_method(estimator: Any, task: TaskKind, has_proba: bool) -> str | None:
    """The raw scores a model answers with: an anomaly detector's score_samples, or the
    decision_function of a classifier without probabilities."""
    if task == "anomaly-detection" and callable(getattr(estimator, "score_samples", None)):
        return "score_samples"
    if (
        task in ("text-classification", "tabular-classification")
        and not has_proba
        and callable(getattr(estimator, "decision_function", None))
    ):
        return "decision_function"
    return None


def n_outputs(estimator: Any) -> int:
    """How many values a model predicts per row (multi-output regression, multilabel)."""
    final = final_step(estimator)
    found = getattr(final, "classes_", None)
    if isinstance(found, list):
        return len(found)
    inner = getattr(final, "estimators_", None)
    if type(final).__name__.startswith("MultiOutput") and isinstance(inner, list):
        return len(inner)
    outputs = getattr(final, "n_outputs_", None)
    if isinstance(outputs, int):
        return outputs
    shape: tuple[int, ...] = tuple(getattr(getattr(final, "coef_", None), "shape", ()))
    if is_regressor_like(final) and len(shape) == 2:
        return int(shape[0])
    return 1


def is_regressor_like(estimator: Any) -> bool:
    from sklearn.base import is_regressor

    return bool(is_regressor(estimator))


def classes(estimator: Any) -> list[Label] | None:
    found = getattr(estimator, "classes_", None)
    if found is None or is_multilabel(estimator):
        return None
    return [to_label(c) for c in found]


NATIVE_BOOSTERS = {
    "xgboost": (
        "an XGBoost native Booster",
        "register the scikit-learn wrapper instead: xgboost.XGBClassifier or XGBRegressor "
        "(fit one, or load the booster into one with .load_model(path)), saved with "
        "joblib.dump(model, 'model.joblib')",
    ),
    "lightgbm": (
        "a LightGBM native Booster",
        "register the scikit-learn wrapper instead: lightgbm.LGBMClassifier or LGBMRegressor "
        "fitted with .fit(X, y), saved with joblib.dump(model, 'model.joblib')",
    ),
}


def native_booster_message(what: str, library: str) -> str:
    kind, advice = NATIVE_BOOSTERS[library]
    return f"{what} is {kind}, which has no scikit-learn API to serve; {advice}"


def check_native_booster(estimator: Any) -> None:
    """Refuse XGBoost's and LightGBM's native Booster objects (their predict takes a DMatrix or
    raw margins, not rows), naming the scikit-learn wrapper to register instead."""
    cls = type(final_step(estimator))
    library = cls.__module__.split(".")[0]
    if cls.__name__ == "Booster" and library in NATIVE_BOOSTERS:
        raise InvalidModelError(native_booster_message("the model", library))


def sniff_native_booster(data: bytes) -> str | None:
    """The library whose native model file `data` is (not a pickle), or None."""
    head = data[:256].lstrip()
    if head.startswith(b"tree\n") or b"\nversion=v" in head[:64]:
        return "lightgbm"
    if head.startswith(b"{") and head[1:].lstrip().startswith(b'"learner"'):
        return "xgboost"  # JSON, indented or not
    if head.startswith(b"{L") and b"learner" in head[:32]:
        return "xgboost"  # UBJSON
    if head.startswith(b"binf") or head.startswith(b"bs64"):
        return "xgboost"
    return None


def check_fitted(estimator: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(final_step(estimator))
    except NotFittedError:
        raise InvalidModelError(
            f"{describe_class(estimator)} is not fitted; fit it before registering"
        ) from None
    except TypeError:
        # Not a scikit-learn estimator (check_is_fitted refuses it): having predict is enough.
        return
