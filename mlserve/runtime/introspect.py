"""What a fitted estimator is: task, input schema, classes. Imports scikit-learn lazily."""

from __future__ import annotations

from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.schemas import InputSchema, Label, TaskKind

TEXT_VECTORIZERS = ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer")


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


def detect_task(estimator: Any, override: TaskKind | None = None) -> TaskKind:
    """Classification or regression, text or tabular; `override` wins when given."""
    from sklearn.base import is_classifier, is_regressor

    if override is not None:
        return override
    text = is_text_model(estimator)
    if is_classifier(estimator):
        return "text-classification" if text else "tabular-classification"
    if is_regressor(estimator):
        if text:
            raise InvalidModelError(
                "text regression models are not supported; register a classifier or a tabular model"
            )
        return "tabular-regression"
    raise InvalidModelError(
        f"cannot tell whether {describe_class(estimator)} is a classifier or a regressor; "
        "pass --task text-classification|tabular-classification|tabular-regression"
    )


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
    return InputSchema(kind="tabular", feature_names=feature_names, n_features=int(n_features))


def classes(estimator: Any) -> list[Label] | None:
    found = getattr(estimator, "classes_", None)
    if found is None:
        return None
    return [to_label(c) for c in found]


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
