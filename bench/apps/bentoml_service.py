"""BentoML peer (bench/peers.py): the same joblib pipeline behind a batchable BentoML API."""

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1, traffic={"timeout": 60})
class Classifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    # Adaptive batching: requests are merged into one call of up to 64 texts.
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(texts)
