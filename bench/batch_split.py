"""Where one 100-text /api/predict/batch request spends its time, in process: the model call,
the conversion of its output, and the request/response handling around it.

Usage: python bench/batch_split.py  (pin it with `taskset -c 0` for steadier figures)
"""

from __future__ import annotations

import csv
import importlib.resources
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from mlserve.registry import Registry
from mlserve.runtime.model import LoadedModel
from mlserve.schemas import BatchPredictRequest
from mlserve.server.jsonbody import loads
from mlserve.serving.service import prediction_fields as _item


def timed(label: str, fn: Callable[[], Any], n: int = 300) -> Any:
    out = fn()
    started = time.perf_counter()
    for _ in range(n):
        out = fn()
    print(f"{label:55s} {(time.perf_counter() - started) / n * 1e3:7.3f} ms")
    return out


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="mlserve-split-"))
    subprocess.run(
        [sys.executable, "-m", "mlserve", "train", "--sample", "sentiment", "--name",
         "sentiment", "--registry", str(home / "registry"), "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    artifact = Registry(home / "registry").load("sentiment")
    model = LoadedModel(artifact.estimator, artifact.metadata, max_text_length=10_000)
    corpus = importlib.resources.files("mlserve.samples") / "sentiment.csv"
    with corpus.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)][:100]
    body = orjson.dumps({"texts": texts})

    timed("parse (orjson + duplicate-key check) and validate", lambda: BatchPredictRequest
          .model_validate(loads(body)))  # fmt: skip
    rows = timed("prepare 100 rows", lambda: [model.prepare(text=t, field="t") for t in texts])
    timed("estimator.predict_proba on 100 texts", lambda: artifact.estimator.predict_proba(texts))
    predictions = timed("LoadedModel.predict (predict_proba + conversion)", lambda: model
                        .predict(rows))  # fmt: skip
    payload = timed(
        "response items with ids",
        lambda: {"predictions": [{"id": f"r-{i}", **_item(p)} for i, p in enumerate(predictions)]},
    )
    timed("orjson.dumps the response", lambda: orjson.dumps(payload))
    print(f"request {len(body):,} bytes, response {len(orjson.dumps(payload)):,} bytes")


if __name__ == "__main__":
    main()
