"""Sample data and tiny models fitted on demand (never committed as pickles), and the one way
a test damages a registered artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlserve.config import Settings, load_settings
from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
FLOWERS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
    [6.3, 2.9, 5.6, 1.8],
    [4.9, 3.0, 1.4, 0.2],
]

# Three classes of ten sentences: the in-process server tests' `sentiment` model.
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
# Sentences the `sentiment` model was not fitted on (requests in the server tests).
UNSEEN_TEXTS = [
    "Rude staff and a cold, disgusting meal",
    "The parcel arrived on Tuesday",
    "Wonderful, friendly and helpful service",
    "It is a green box",
    "Awful, broken and late",
    "Lovely people, great food",
    "The shop shuts at six",
]
TEXT_METRICS = {"accuracy": 0.8667, "macro_f1": 0.8512, "n_test": 15}
IRIS_METRICS = {"accuracy": 0.9737, "macro_f1": 0.9733, "n_test": 38}

# Two classes, a few words each: the `sentiment` model of the process and command tests.
POS_NEG = {
    "pos": ["good great fine", "lovely good", "great", "excellent lovely service", "happy great"],
    "neg": ["awful bad", "terrible awful", "bad", "horrible rude staff", "angry awful"],
}


def iris() -> tuple[Any, Any]:
    """Iris features and string labels (setosa, versicolor, virginica)."""
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target_names[data.target]


def iris_estimator() -> Any:
    """LogisticRegression on iris, string labels."""
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    return LogisticRegression(max_iter=1000).fit(x, y)


def text_estimator(classes: dict[str, list[str]] = POS_NEG) -> Any:
    """TF-IDF + LogisticRegression over `classes` (label -> texts); pos/neg unless told."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = [t for ts in classes.values() for t in ts]
    labels = [label for label, ts in classes.items() for _ in ts]
    pipe = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=1000))])
    return pipe.fit(texts, labels)


def populate(root: Path) -> dict[str, ModelMetadata]:
    """A registry at `root` with sentiment (text, pos/neg) and iris (four named features),
    both @production."""
    registry = Registry(root)
    return {
        "sentiment": registry.register_estimator(
            text_estimator(), name="sentiment", aliases=["production"]
        ),
        "iris": registry.register_estimator(
            iris_estimator(), name="iris", aliases=["production"], feature_names=IRIS_FEATURES
        ),
    }


def tamper(registry: Registry, meta: ModelMetadata) -> None:
    """Flip bytes in the middle of an artifact: same size, another sha256, so it fails to load."""
    path = registry.artifact_path(meta)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def populated_settings(root: Path, **sections: Any) -> Settings:
    """Settings over a registry at root/registry holding populate()'s two models, with
    root/home as home; keyword sections as load_settings takes them (server={...}, ...)."""
    populate(root / "registry")
    return load_settings(
        None, home=str(root / "home"), registry={"path": str(root / "registry")}, **sections
    )
