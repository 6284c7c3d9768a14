"""LoadedModel: validates inputs against a model's schema and predicts on many rows in one call."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserve.errors import InvalidInputError
from mlserve.runtime import introspect
from mlserve.runtime.signature import Signature, example_row
from mlserve.schemas import ColumnSpec, Label, ModelMetadata

# Final estimators whose predict() is exactly classes_[argmax(predict_proba)] (up to exact ties),
# so one predict_proba pass yields both labels and probabilities.
ARGMAX_EXACT = frozenset(
    {
        "LogisticRegression",
        "LogisticRegressionCV",
        "MultinomialNB",
        "GaussianNB",
        "BernoulliNB",
        "ComplementNB",
        "CategoricalNB",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "GradientBoostingClassifier",
        "HistGradientBoostingClassifier",
        "CalibratedClassifierCV",
        "LinearDiscriminantAnalysis",
        "QuadraticDiscriminantAnalysis",
    }
)


@dataclass(slots=True, frozen=True)
class Prediction:
    """One row's answer: the label (a list for multi-output and multilabel models) and, only
    when the model computes them, probabilities or raw scores (decision_function of
    classifiers without probabilities, score_samples of anomaly detectors)."""

    label: Label | list[Label]
    confidence: float | None
    probabilities: dict[str, float] | None
    scores: dict[str, float] | None = None


class LoadedModel:
    """A fitted estimator plus its registry metadata; knows nothing of HTTP or disk."""

    def __init__(
        self, estimator: Any, metadata: ModelMetadata, *, max_text_length: int = 10_000
    ) -> None:
        self.estimator = estimator
        self.metadata = metadata
        self.name = metadata.name
        self.version = metadata.version
        self.max_text_length = max_text_length
        schema = metadata.input_schema
        self.is_text = schema.kind == "text"
        self.feature_names = list(schema.feature_names or [])
        self.n_features = schema.n_features or len(self.feature_names)
        self._feature_index = {n: i for i, n in enumerate(self.feature_names)}
        self.has_proba = metadata.has_predict_proba and callable(
            getattr(estimator, "predict_proba", None)
        )
        classes = introspect.classes(estimator) if self.has_proba else None
        self.classes: list[Label] = classes or list(metadata.classes or [])
        self._class_keys = [str(c) for c in self.classes]
        final_step = introspect.final_step(estimator)
        final = type(final_step).__name__
        self.labels_from_proba = self.has_proba and final in ARGMAX_EXACT
        self.task = metadata.task
        # Classifiers without probabilities answer decision_function scores; anomaly
        # detectors their score_samples.
        self.score_method = introspect.score_method(estimator, self.task, self.has_proba)
        # Multilabel classifiers fitted on an indicator matrix answer the outputs that are on.
        output_classes = getattr(final_step, "classes_", None)
        self.indicator = self.task == "tabular-multilabel" and isinstance(output_classes, list)
        if self.indicator:
            self.indicator = all(
                set(np.asarray(c).tolist()) <= {0, 1} for c in output_classes or []
            )
        # Models fitted on a pandas DataFrame get one per batch, typed by the signature.
        self.signature: Signature | None = None
        if schema.dataframe and not self.is_text:
            columns = schema.columns or [
                ColumnSpec(name=n, dtype="float") for n in self.feature_names
            ]
            self.signature = Signature(columns, dataframe=True)

    @property
    def ref(self) -> str:
        # Version 0: a model being checked before registration, which has no number yet.
        return f"{self.name}:{self.version}" if self.version else self.name

    # ------------------------------------------------------------------ validation
    def prepare_text(self, text: Any, *, field: str = "text") -> str:
        """The text itself, once it is a non-blank string within the length limit; errors
        name `field` (the batch route, V2 codec and job runner name the row)."""
        if not self.is_text:
            raise InvalidInputError(
                f"model {self.ref} is tabular: send 'features' "
                f"({self.n_features} values{self._names_hint()}), not '{field}'"
            )
        if not isinstance(text, str):
            raise InvalidInputError(f"'{field}' must be a string")
        if not text or text.isspace():
            # Nothing to classify: a model would still answer (its prior), which is no answer.
            raise InvalidInputError(f"'{field}' cannot be empty or whitespace only")
        if len(text) > self.max_text_length:
            raise InvalidInputError(
                f"'{field}' is {len(text)} characters; the limit is {self.max_text_length}"
            )
        return text

    def _names_hint(self) -> str:
        if not self.feature_names:
            return ""
        return ": " + ", ".join(self.feature_names)

    def prepare_features(self, features: Any, *, field: str = "features") -> list[float]:
        """A row of floats in the model's feature order, from a mapping or a sequence."""
        if self.is_text:
            raise InvalidInputError(f"model {self.ref} takes text: send 'text', not '{field}'")
        if isinstance(features, Mapping):
            if not self.feature_names:
                raise InvalidInputError(
                    f"model {self.ref} has no feature names; send '{field}' as a list of "
                    f"{self.n_features} numbers"
                )
            missing = [n for n in self.feature_names if n not in features]
            extra = [k for k in features if k not in self._feature_index]
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing {', '.join(missing)}")
                if extra:
                    parts.append(f"unknown {', '.join(map(str, extra))}")
                raise InvalidInputError(
                    f"'{field}' does not match model {self.ref} ({'; '.join(parts)}); "
                    f"expected features: {', '.join(self.feature_names)}"
                )
            values = [features[n] for n in self.feature_names]
        elif isinstance(features, Sequence) and not isinstance(features, str | bytes):
            if len(features) != self.n_features:
                raise InvalidInputError(
                    f"'{field}' has {len(features)} values; model {self.ref} expects "
                    f"{self.n_features}{self._names_hint()}"
                )
            values = list(features)
        else:
            raise InvalidInputError(
                f"'{field}' must be an object of feature values or a list of numbers"
            )
        if self.signature is not None:
            return self.signature.check(values, field)
        row = []
        for i, value in enumerate(values):
            name = self.feature_names[i] if self.feature_names else str(i)
            if value is None:
                row.append(math.nan)  # missing value: left to the model (NaN-aware or error)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInputError(f"'{field}.{name}' must be a number, not {value!r:.40}")
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                raise InvalidInputError(f"'{field}.{name}' must be finite") from None
            if math.isinf(number):
                raise InvalidInputError(f"'{field}.{name}' must be finite")
            row.append(number)
        return row

    def prepare(self, *, text: Any = None, features: Any = None, field: str | None = None) -> Any:
        if text is not None:
            return self.prepare_text(text, field=field or "text")
        if features is not None:
            return self.prepare_features(features, field=field or "features")
        wanted = "text" if self.is_text else "features"
        raise InvalidInputError(f"model {self.ref} needs '{wanted}'")

    def parse_cell(self, index: int, text: str | None, where: str) -> Any:
        """A CSV cell of feature `index` as the JSON value it stands for (empty: missing);
        `where` names the line for errors."""
        if text is None:
            raise InvalidInputError(f"{where}: fewer values than columns in the header")
        if self.signature is not None:
            return self.signature.parse_cell(index, text, where)
        stripped = text.strip()
        if not stripped:
            return None  # a missing value, like null in JSON
        try:
            return float(stripped)
        except ValueError:
            column = self.feature_names[index] if self.feature_names else str(index)
            raise InvalidInputError(
                f"{where}, column '{column}': {text!r:.40} is not a number"
            ) from None

    def sample_input(self) -> Any:
        """A valid input for smoke predictions (health checks)."""
        if self.is_text:
            return "mlserve health check"
        if self.signature is not None:
            return self.prepare_features(example_row(self.signature.columns))
        return [0.0] * self.n_features

    # ------------------------------------------------------------------ prediction
    def _matrix(self, rows: Sequence[Any]) -> Any:
        if self.is_text:
            return list(rows)
        if self.signature is not None:
            return self.signature.frame(rows)
        return np.asarray(rows, dtype=float).reshape(len(rows), self.n_features)

    def predict(self, rows: Sequence[Any]) -> list[Prediction]:
        """One vectorized model call for prepared rows (one predict_proba pass when exact).

        Missing values (null features) go to the model, which may handle them; when it refuses
        them, that is the input's fault: InvalidInputError naming the features, not a 500."""
        x = self._matrix(rows)
        try:
            # Features far outside the training range overflow inside the model: checked on
            # its output below, not left to floating-point warnings. scikit-learn's checks
            # of a fitted estimator's own arguments are skipped (about 5 % of a text batch),
            # and so, for text, is its scan for NaN in the matrix the vectorizer made from
            # strings (another 4 %): the output is checked for them below all the same.
            with (
                np.errstate(over="ignore", invalid="ignore", divide="ignore"),
                _sklearn_config(skip_parameter_validation=True, assume_finite=self.is_text),
            ):
                return self._predict(x)
        except ValueError as exc:
            missing = self._missing_features(x)
            if not missing:
                raise
            raise InvalidInputError(
                f"model {self.ref} does not accept missing values (null) for "
                f"{', '.join(missing)}; send a number for every feature"
            ) from exc

    def _missing_features(self, x: Any) -> list[str]:
        if self.is_text:
            return []
        if self.signature is not None:
            return [str(c) for c in x.columns[x.isna().any(axis=0).to_numpy()]]
        columns = np.flatnonzero(np.isnan(x).any(axis=0)).tolist()
        return [self.feature_names[j] if self.feature_names else str(j) for j in columns]

    def _overflowed(self) -> InvalidInputError:
        return InvalidInputError(
            f"model {self.ref} cannot score these features: they are so far outside the "
            "values it was trained on that its output overflows"
        )

    def _predict(self, x: Any) -> list[Prediction]:
        task = self.task
        if task == "tabular-multilabel":
            return self._predict_multilabel(x)
        if task == "tabular-regression":
            return self._predict_values(x)
        if not self.has_proba:
            with_scores = self._with(self.score_method)
            raw_scores: Any = None
            if with_scores is not None:
                labels, raw_scores = with_scores(x)
            else:
                labels = self.estimator.predict(x)
            values = np.asarray(labels)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise self._overflowed()
            scores = self._scores(x, raw_scores) if self.score_method else None
            return [
                Prediction(
                    label=introspect.to_label(v),
                    confidence=None,
                    probabilities=None,
                    scores=None if scores is None else scores[i],
                )
                for i, v in enumerate(labels)
            ]
        with_proba = None if self.labels_from_proba else self._with("predict_proba")
        labels_raw: Any = None
        if with_proba is not None:
            labels_raw, proba = with_proba(x)
            proba = np.asarray(proba, dtype=float)
        else:
            proba = np.asarray(self.estimator.predict_proba(x), dtype=float)
        if not np.isfinite(proba).all():
            raise self._overflowed()
        if self.labels_from_proba:
            labels_out = [self.classes[i] for i in proba.argmax(axis=1).tolist()]
        else:
            if labels_raw is None:
                labels_raw = self.estimator.predict(x)
            labels_out = [introspect.to_label(v) for v in labels_raw]
        keys = self._class_keys
        out = []
        for label, row in zip(labels_out, proba.tolist(), strict=True):
            out.append(
                Prediction(
                    label=label,
                    confidence=max(row),
                    probabilities=dict(zip(keys, row, strict=True)),
                )
            )
        return out

    def _with(self, method: str | None) -> Any:
        """The estimator's `predict_with_<method>` when it has one: predict(x) and
        method(x) from one pass (an ONNX graph answers both from one run), else None."""
        if method is None:
            return None
        suffix = "proba" if method == "predict_proba" else method
        return getattr(self.estimator, f"predict_with_{suffix}", None)

    def _scores(self, x: Any, raw: Any = None) -> list[dict[str, float]]:
        """Raw scores per row (`raw`: already computed): decision_function by class (binary:
        the positive class, classes[1]), or an anomaly detector's score_samples."""
        if raw is None:
            raw = getattr(self.estimator, self.score_method or "")(x)
        raw = np.asarray(raw, dtype=float)
        if not np.isfinite(raw).all():
            raise self._overflowed()
        if self.score_method == "score_samples":
            return [{"score_samples": v} for v in raw.tolist()]
        keys = self._class_keys
        if raw.ndim == 1:
            key = keys[1] if len(keys) == 2 else "score"
            return [{key: v} for v in raw.tolist()]
        return [dict(zip(keys, row, strict=True)) for row in raw.tolist()]

    def _predict_values(self, x: Any) -> list[Prediction]:
        """Regression: a number per row, or a list of numbers for multi-output models."""
        values = np.asarray(self.estimator.predict(x), dtype=float)
        if not np.isfinite(values).all():
            raise self._overflowed()
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        return [Prediction(label=v, confidence=None, probabilities=None) for v in values.tolist()]

    def _predict_multilabel(self, x: Any) -> list[Prediction]:
        """Multilabel: the outputs that are on (indicator models; probabilities: each
        output's chance of being on), or one label per output."""
        predicted = np.asarray(self.estimator.predict(x))
        if predicted.ndim == 1:
            predicted = predicted.reshape(-1, 1)
        on: list[dict[str, float]] | None = None
        if self.indicator and self.has_proba:
            parts = self.estimator.predict_proba(x)
            if isinstance(parts, list):
                columns = [np.asarray(p, dtype=float)[:, -1] for p in parts]
                matrix = np.column_stack(columns)
            else:  # one (n, outputs) array of P(on), as some estimators give
                matrix = np.asarray(parts, dtype=float)
            if not np.isfinite(matrix).all():
                raise self._overflowed()
            keys = [str(j) for j in range(matrix.shape[1])]
            on = [dict(zip(keys, row, strict=True)) for row in matrix.tolist()]
        out = []
        for i, row in enumerate(predicted.tolist()):
            label: list[Label]
            if self.indicator:
                label = [j for j, v in enumerate(row) if v]
            else:
                label = [introspect.to_label(v) for v in row]
            out.append(
                Prediction(
                    label=label,
                    confidence=None,
                    probabilities=None if on is None else on[i],
                )
            )
        return out


def _sklearn_config(**settings: Any) -> Any:
    """sklearn.config_context(**settings), imported when a model first predicts (a
    command that never predicts does not import scikit-learn for it)."""
    from sklearn import config_context

    return config_context(**settings)
