"""What the live rollout tests share: a registry with one model per scenario, and a bounded
traffic loop that sends predictions (and, when asked, the true labels) until a rollout ends."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from support.data import FLOWERS, IRIS_FEATURES, POS_NEG, iris, iris_estimator, text_estimator

from mlserve.registry import Registry

FLIPPED = {"pos": POS_NEG["neg"], "neg": POS_NEG["pos"]}
TEXTS = [(text, label) for label, texts in POS_NEG.items() for text in texts]
FLOWER = dict(zip(IRIS_FEATURES, FLOWERS[0], strict=True))
POISON = -999.0  # a first feature value the poisonable candidate fails on


def build_registry(root: Path) -> Registry:
    """good 1 → 2 (the same data), flipped 1 → 2 (trained on flipped labels), broken 1 → 2
    (fails on the rows the tests send), each with production on version 1."""
    from .broken_models import PoisonableClassifier

    registry = Registry(root)
    for version in (1, 2):
        registry.register_estimator(
            text_estimator(), name="good", aliases=["production"] if version == 1 else []
        )
    registry.register_estimator(text_estimator(), name="flipped", aliases=["production"])
    registry.register_estimator(text_estimator(FLIPPED), name="flipped")
    registry.register_estimator(
        iris_estimator(), name="broken", aliases=["production"], feature_names=IRIS_FEATURES
    )
    x, y = iris()
    registry.register_estimator(
        PoisonableClassifier(poison=POISON).fit(x, y),
        name="broken",
        feature_names=IRIS_FEATURES,
        check=False,
    )
    return registry


@dataclass
class Traffic:
    """Statuses and versions seen, per model; labels sent back."""

    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    labels_sent: int = 0
    failures: list[str] = field(default_factory=list)


def send_until_ended(
    urls: list[str],
    model: str,
    *,
    labels: bool = False,
    threads: int = 3,
    timeout_s: float = 90.0,
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Traffic]:
    """Predictions for `model` from `threads` clients (a new client id per request, spread over
    `urls`) until its rollout is no longer running, or `timeout_s`; with `labels`, each
    answer's true label is sent to /api/feedback. Returns the final rollout and the traffic."""
    traffic = Traffic()
    lock = threading.Lock()
    stop = threading.Event()
    ids = itertools.count()
    deadline = time.monotonic() + timeout_s

    def body(i: int) -> tuple[dict[str, Any], str | None]:
        if model == "broken":
            return {"model": model, "features": {**FLOWER, "sepal_length": POISON}}, None
        text, label = TEXTS[i % len(TEXTS)]
        return {"model": model, "text": text}, label

    def client_loop(worker: int) -> None:
        with httpx.Client(timeout=10, headers=headers) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                i = next(ids)
                url = urls[i % len(urls)]
                request, truth = body(i)
                answer = http.post(
                    url + "/api/predict", json=request, headers={"X-Client-ID": f"client-{i}"}
                )
                with lock:
                    traffic.statuses[answer.status_code] += 1
                if answer.status_code != 200:
                    if answer.status_code != 500 or model != "broken":
                        with lock:
                            traffic.failures.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                data = answer.json()
                with lock:
                    traffic.versions[data["version"]] += 1
                if labels and truth is not None:
                    sent = http.post(
                        url + "/api/feedback",
                        json={"request_id": data["request_id"], "label": truth},
                    )
                    if sent.status_code == 200:
                        with lock:
                            traffic.labels_sent += 1

    workers = [threading.Thread(target=client_loop, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    final: dict[str, Any] = {}
    try:
        with httpx.Client(timeout=10, headers=headers) as http:
            while time.monotonic() < deadline:
                final = http.get(f"{urls[0]}/api/models/{model}/rollout").json()
                if final.get("status") != "running":
                    break
                time.sleep(0.1)  # polling interval of a bounded wait
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=15)
    return final, traffic
