"""Prometheus scrapes: the exposition parsed (so its format must be valid), samples by name."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Samples = dict[str, list[Sample]]


def parse(text: str) -> Samples:
    """The samples of an exposition text, by sample name."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def scrape(source: Any, path: str = "/metrics") -> Samples:
    """GET /metrics from a TestClient or an httpx.Client, or GET a URL (a str); asserts a 200
    answer in Prometheus's text format and returns its samples."""
    if isinstance(source, str):
        response = httpx.get(source, timeout=10)
    else:
        response = source.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return parse(response.text)


def matching(samples: Samples | str, name: str, **labels: str) -> list[float]:
    """The values of the samples of `name` whose labels include `labels`."""
    if isinstance(samples, str):
        samples = parse(samples)
    return [
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(samples: Samples | str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none); from
    parsed samples or an exposition text."""
    return float(sum(matching(samples, name, **labels)))


def value_or_none(samples: Samples | str, name: str, **labels: str) -> float | None:
    """As value, but None when no sample matches (a gauge not exported at all)."""
    found = matching(samples, name, **labels)
    return float(sum(found)) if found else None
