"""The heavier benchmark model of issue 20: TF-IDF with bigrams (~29k terms) + logistic regression.

The bundled sentiment corpus alone gives a ~9.5k-term vocabulary. To reach the issue's size the
corpus is extended with synthetic sentences, each the head of one real sentence spliced to the
tail of another of the same label (seeded, so every run trains the same model): every junction
adds new bigrams, which is what grows the vocabulary.

Usage: python bench/heavy_model.py OUT.joblib   (prints vocabulary size and file size as JSON)
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import random
import sys
from pathlib import Path

SYNTHETIC = 26_000  # spliced sentences; with the corpus this gives a ~29k-term vocabulary
SEED = 20


def corpus() -> tuple[list[str], list[str]]:
    path = importlib.resources.files("mlserve.samples") / "sentiment.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows]
    rng = random.Random(SEED)
    by_label: dict[str, list[list[str]]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text.split())
    names = sorted(by_label)
    for _ in range(SYNTHETIC):
        label = rng.choice(names)
        a, b = rng.choice(by_label[label]), rng.choice(by_label[label])
        cut_a = rng.randint(1, max(1, len(a) - 1))
        cut_b = rng.randint(1, max(1, len(b) - 1))
        texts.append(" ".join(a[:cut_a] + b[cut_b:]))
        labels.append(label)
    return texts, labels


def train(out: Path) -> dict[str, object]:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts, labels = corpus()
    model = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("clf", LogisticRegression(max_iter=2000, C=10.0, random_state=SEED)),
        ]
    )
    model.fit(texts, labels)
    joblib.dump(model, out)
    return {
        "path": str(out),
        "rows": len(texts),
        "vocabulary": len(model.named_steps["tfidf"].vocabulary_),
        "classes": [str(c) for c in model.classes_],
        "bytes": out.stat().st_size,
    }


if __name__ == "__main__":
    print(json.dumps(train(Path(sys.argv[1]))))  # noqa: T201
