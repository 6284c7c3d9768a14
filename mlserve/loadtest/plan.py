"""What to send (Target, built from the command's flags) and how to send it (LoadPlan)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from mlserve.errors import UsageError
from mlserve.loadtest.options import (
    ENDPOINTS,
    ENGINES,
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_PAYLOADS,
    MAX_RATE,
    MAX_REQUESTS,
    MAX_WARMUP_S,
    USER_AGENT,
    split_int,
)
from mlserve.loadtest.payloads import Payloads

__all__ = ["LoadPlan", "Target", "build_target", "check_url"]


@dataclass(frozen=True, kw_only=True)
class Target:
    """What to send: one method and URL, pre-encoded bodies sent round-robin."""

    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    bodies: tuple[bytes | None, ...]
    endpoint: str = "custom"

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


def check_url(url: str) -> str:
    """Only http(s) URLs with a host; returns the URL without a trailing slash."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"invalid --url '{url}': {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"invalid --url '{url}': only http:// and https:// URLs can be tested")
    if not parts.hostname:
        raise UsageError(f"invalid --url '{url}': no host")
    if parts.username or parts.password:
        raise UsageError(f"invalid --url '{url}': put credentials in --header or --api-key")
    return url.rstrip("/")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _v2_path(model: str) -> str:
    name, version = model, None
    if ":" in model and "@" not in model:
        name, _, version = model.partition(":")
    path = f"/v2/models/{quote(name, safe='@')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + "/infer"


def build_target(
    *,
    url: str,
    endpoint: str = "predict",
    payloads: Payloads,
    model: str | None = None,
    batch_size: int = 1,
    path: str | None = None,
    method: str | None = None,
    body_template: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    api_key: str | None = None,
) -> Target:
    """Turn the command's flags into the exact requests to send (bodies encoded once)."""
    base = check_url(url)
    if endpoint not in ENDPOINTS:
        raise UsageError(f"invalid --endpoint '{endpoint}': use {', '.join(ENDPOINTS)}")
    if batch_size < 1 or batch_size > 10_000:
        raise UsageError(f"invalid --batch-size {batch_size}: use 1 to 10000")
    if batch_size > 1 and endpoint not in ("batch", "v2"):
        raise UsageError("--batch-size only applies to --endpoint batch or v2")
    if endpoint != "custom" and (method is not None or body_template is not None):
        raise UsageError("--method and --body only apply to --endpoint custom")
    if path is not None and not path.startswith("/"):
        raise UsageError(f"invalid --path '{path}': it must start with '/'")
    texts = list(payloads.texts)
    raw = list(payloads.bodies)

    bodies: list[bytes | None]
    verb = "POST"
    if endpoint == "custom":
        if path is None:
            raise UsageError("--endpoint custom needs --path (e.g. --path /predict)")
        verb = (method or ("POST" if body_template is not None or raw else "GET")).upper()
        if verb not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise UsageError(f"invalid --method '{method}': use GET, POST, PUT, PATCH or DELETE")
        if body_template is not None and raw:
            raise UsageError("--body and a .jsonl --data file both give the body; pick one")
        if raw:
            bodies = list(raw)
        elif body_template is not None:
            bodies = _render_template(body_template, texts)
        else:
            bodies = [None]
    elif raw:
        bodies = list(raw)
    else:
        if not texts:
            raise UsageError("no input texts to send")
        bodies = []
        if endpoint == "predict":
            for text in texts:
                obj: dict[str, Any] = {"text": text}
                if model:
                    obj["model"] = model
                bodies.append(_encode(obj))
        else:
            for chunk in _chunks(texts, batch_size):
                if endpoint == "batch":
                    obj = {"texts": chunk}
                    if model:
                        obj["model"] = model
                else:
                    obj = {
                        "inputs": [
                            {
                                "name": "text",
                                "shape": [len(chunk)],
                                "datatype": "BYTES",
                                "data": chunk,
                            }
                        ]
                    }
                bodies.append(_encode(obj))
    if endpoint == "predict":
        default_path = "/api/predict"
    elif endpoint == "batch":
        default_path = "/api/predict/batch"
    elif endpoint == "v2":
        if not model:
            raise UsageError("--endpoint v2 needs --model NAME (the path is /v2/models/NAME/infer)")
        default_path = _v2_path(model)
    else:
        default_path = path or "/"
    all_headers: list[tuple[str, str]] = [("User-Agent", USER_AGENT), ("Accept", "*/*")]
    if any(b is not None for b in bodies):
        all_headers.append(("Content-Type", "application/json"))
    if api_key:
        all_headers.append(("Authorization", f"Bearer {api_key}"))
    for name, _ in headers:
        # A header given on the command line replaces a default of the same name.
        all_headers = [(k, v) for k, v in all_headers if k.lower() != name.lower()]
    all_headers.extend(headers)
    for name, _ in all_headers:
        if name.lower() in ("content-length", "host", "transfer-encoding", "connection"):
            raise UsageError(f"--header '{name}' is set by the load generator itself")
    return Target(
        url=base + (path or default_path),
        method=verb,
        headers=tuple(all_headers),
        bodies=tuple(bodies[:MAX_PAYLOADS]),
        endpoint=endpoint,
    )


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    if len(texts) < size:  # repeat the corpus so every batch is full
        texts = (texts * (size // len(texts) + 1))[:size]
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)] or [texts[:size]]


def _render_template(template: str, texts: Sequence[str]) -> list[bytes | None]:
    if "{{text}}" not in template:
        candidates = [template]
    else:
        pool = texts or ["hello"]
        candidates = [template.replace("{{text}}", json.dumps(t)[1:-1]) for t in pool]
    try:
        json.loads(candidates[0])
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"invalid --body: not JSON once {{{{text}}}} is filled in ({exc.msg}); "
            """e.g. --body '{"q": "{{text}}"}'"""
        ) from None
    return [c.encode() for c in candidates]


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """How to send: closed loop (concurrency) or open loop (rate), and for how long."""

    concurrency: int = 8
    rate: float | None = None
    max_in_flight: int = 0
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    timeout: float = 10.0
    engine: str = "raw"
    insecure: bool = False
    # Set for one process of several: when to start (perf_counter clock, shared by processes
    # on one host) and which open-loop slots to take (k of every `stride`).
    start_at: float | None = None
    slot_index: int = 0
    slot_stride: int = 1

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def connections(self) -> int:
        return self.max_in_flight if self.open_loop else self.concurrency

    def validate(self) -> LoadPlan:
        if self.rate is not None and not 0 < self.rate <= MAX_RATE:
            raise UsageError(f"invalid --rate {self.rate:g}: use more than 0, at most {MAX_RATE:g}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(
                f"invalid --concurrency {self.concurrency}: use 1 to {MAX_CONCURRENCY}"
            )
        if self.open_loop and not 1 <= self.max_in_flight <= MAX_CONCURRENCY:
            raise UsageError(
                f"invalid --max-in-flight {self.max_in_flight}: use 1 to {MAX_CONCURRENCY}"
            )
        if self.duration is not None and not 0 < self.duration <= MAX_DURATION_S:
            raise UsageError(
                f"invalid --duration {self.duration:g}s: use more than 0, at most "
                f"{MAX_DURATION_S:g}s"
            )
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise UsageError(f"invalid --requests {self.requests}: use 1 to {MAX_REQUESTS:,}")
        if not 0 <= self.warmup <= MAX_WARMUP_S:
            raise UsageError(f"invalid --warmup {self.warmup:g}s: use 0 to {MAX_WARMUP_S:g}s")
        if not 0 < self.timeout <= 600:
            raise UsageError(f"invalid --timeout {self.timeout:g}: use more than 0, at most 600")
        if self.engine not in ENGINES:
            raise UsageError(f"invalid --engine '{self.engine}': use {' or '.join(ENGINES)}")
        return self

    def describe(self) -> str:
        if self.open_loop:
            shape = f"open loop at {self.rate:g} req/s (at most {self.max_in_flight} in flight)"
        else:
            shape = f"closed loop, {self.concurrency} connection{'s' * (self.concurrency != 1)}"
        stop = []
        if self.requests is not None:
            stop.append(f"{self.requests:,} requests")
        if self.duration is not None:
            stop.append(f"{self.duration:g}s")
        warm = f", warmup {self.warmup:g}s" if self.warmup else ""
        return f"{shape}, {' or '.join(stop)}{warm}"

    def share(self, index: int, processes: int) -> LoadPlan:
        """This process's part of the load when `processes` share it."""
        requests = None
        if self.requests is not None:
            requests = split_int(self.requests, processes)[index]
        return replace(
            self,
            concurrency=max(1, split_int(self.concurrency, processes)[index]),
            max_in_flight=max(1, math.ceil(self.max_in_flight / processes)),
            requests=requests,
            slot_index=index,
            slot_stride=processes,
        )
