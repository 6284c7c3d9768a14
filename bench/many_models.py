"""Many-models benchmark (not CI): 200 small models behind one `mlserve serve`, a Zipf mix.

A registry of --models small models (--kind tree: fully grown decision trees, about as many
nodes as --rows, so --rows sets their size; or logistic regressions; --features features, 3
random classes) is served three ways: with server.max_loaded (--max-loaded), with
server.memory_budget_mb (--budget-mb), and with no budget (every model loaded at startup). Each
server gets the same request sequence: model ranks drawn from a Zipf law (numpy zipf,
a=--zipf, ranks above --models drawn again), sent by a closed loop of --concurrency httpx
clients (127.0.0.1 only) for at most --requests requests or --duration seconds. The server's
RSS is sampled every 0.5 s (psutil).

A request counts as a cold start when its model is not among the ones an LRU replay of the
request order (same limit) holds: exact at --concurrency 1, close above it (two requests in
flight may reach the server in the other order); the server's own counters (loads,
evictions, mlserve_model_cold_start_seconds) are reported next to it. RSS is reported at ready,
after the warm-up request (scikit-learn imported, one model loaded: the floor), at its maximum
and at the end; the load average of the machine next to it (a shared machine is noisy).

Usage: flock /tmp/bench.lock python bench/many_models.py [--models 200] [--max-loaded 20]
         [--budget-mb 1.0] [--requests 6000] [--duration 60] [--concurrency 2]
Results: a summary on stdout and bench/out/many-models.json (--out).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families
from run import OUT, PY, free_port, pinned  # the bench's shared helpers


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 2)


def build_registry(root: Path, models: int, features: int, rows: int, kind: str, seed: int) -> int:
    """Register `models` small models; returns the artifact size of one (bytes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from mlserve.registry import Registry

    registry = Registry(root)
    rng = np.random.default_rng(seed)
    size = 0
    for i in range(models):
        x = rng.normal(size=(rows, features))
        y = rng.integers(0, 3, size=rows)
        if kind == "tree":  # random labels: a fully grown tree of about `rows` nodes
            estimator: Any = DecisionTreeClassifier(random_state=i).fit(x, y)
        else:
            estimator = LogisticRegression(max_iter=300).fit(x, y)
        meta = registry.register_estimator(estimator, name=f"m{i:03d}", aliases=["production"])
        size = meta.size_bytes
    return size


def zipf_sequence(models: int, count: int, a: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < count:
        draw = rng.zipf(a, size=count)
        out.extend(int(r) - 1 for r in draw if r <= models)
    return out[:count]


def lru_replay(sequence: list[int], limit: int) -> list[bool]:
    """Whether each request finds its model unloaded, for an LRU cache of `limit` models
    (limit 0: everything loaded at startup, nothing is cold)."""
    if limit <= 0:
        return [False] * len(sequence)
    held: collections.OrderedDict[int, None] = collections.OrderedDict()
    cold = []
    for model in sequence:
        if model in held:
            held.move_to_end(model)
            cold.append(False)
            continue
        cold.append(True)
        held[model] = None
        if len(held) > limit:
            held.popitem(last=False)
    return cold


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psutil.Error):
                rss = self.proc.memory_info().rss / 2**20
                self.samples.append((round(time.monotonic() - self.t0, 2), round(rss, 1)))
            self.stop.wait(0.5)


def scrape(url: str) -> dict[str, float]:
    """Sums of the budget-related samples of /metrics, by sample name."""
    wanted = {
        "mlserve_model_loads_total",
        "mlserve_model_evictions_total",
        "mlserve_model_cold_start_seconds_count",
        "mlserve_model_cold_start_seconds_sum",
        "mlserve_models_loaded",
        "mlserve_models_estimated_bytes",
    }
    text = httpx.get(url + "/metrics", timeout=10).text
    sums: dict[str, float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                sums[sample.name] += sample.value
    return dict(sums)


def run_server(
    label: str,
    registry: Path,
    home: Path,
    models_section: dict[str, Any],
    sequence: list[int],
    cold: list[bool],
    args: argparse.Namespace,
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = home / f"{label}.toml"
    lines = ["[logging]", "access_log = false", "[feedback]", "enabled = false", "[server]"]
    lines += [f"{key} = {value}" for key, value in models_section.items()]
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["MLSERVE_HOME"] = str(home)
    log = (home / f"{label}.log").open("wb")
    started = time.monotonic()
    server = subprocess.Popen(
        pinned(0, [PY, "-m", "mlserve", "serve", "--port", str(port), "--no-sample",
                   "--registry", str(registry), "--config", str(config),
                   "--log-level", "warning"]),
        # Not in the checkout: `python -m` puts the working directory first on sys.path, so
        # PYTHONPATH could not point the server at another copy of mlserve (a before/after run).
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/api/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{label}: server did not become ready (see {log.name})")
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        rss = RssSampler(server.pid)
        rss.thread.start()
        time.sleep(1.0)
        rss_ready = rss.samples[-1][1]

        lock = threading.Lock()
        cursor = iter(range(len(sequence)))
        records: list[tuple[int, int, float]] = []  # (index, status, ms)
        stop_at = time.monotonic() + args.duration
        features = [0.1] * args.features

        def worker() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while time.monotonic() < stop_at:
                    with lock:
                        index = next(cursor, None)
                    if index is None:
                        return
                    body = {"model": f"m{sequence[index]:03d}", "features": features}
                    t = time.perf_counter()
                    try:
                        status = client.post("/api/predict", json=body).status_code
                    except httpx.TransportError:
                        status = 0
                    ms = (time.perf_counter() - t) * 1000.0
                    with lock:
                        records.append((index, status, ms))

        # One request first, outside the figures: the first model loaded imports scikit-learn
        # (about a second) in a server that started with no model loaded.
        httpx.post(url + "/api/predict", json={"model": "m000", "features": features}, timeout=60)
        # The floor: scikit-learn imported and one model loaded.
        rss_warm = round(psutil.Process(server.pid).memory_info().rss / 2**20, 1)
        load_started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - load_started
        time.sleep(1.0)
        rss.stop.set()
        rss.thread.join()
        metrics = scrape(url)
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(20)
        if server.poll() is None:
            server.kill()
        log.close()

    ok = [(i, ms) for i, status, ms in records if status == 200]
    cold_ms = [ms for i, ms in ok if cold[i]]
    warm_ms = [ms for i, ms in ok if not cold[i]]
    during = [value for _, value in rss.samples]
    cold_count = metrics.get("mlserve_model_cold_start_seconds_count", 0.0)
    cold_sum = metrics.get("mlserve_model_cold_start_seconds_sum", 0.0)
    return {
        "label": label,
        "models": models_section,
        "ready_s": round(ready_s, 2),
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "throughput": round(len(records) / elapsed, 1),
        "cold_replayed": len(cold_ms),
        "cold_p50_ms": percentile(cold_ms, 50),
        "cold_p99_ms": percentile(cold_ms, 99),
        "warm_p50_ms": percentile(warm_ms, 50),
        "warm_p99_ms": percentile(warm_ms, 99),
        "all_p99_ms": percentile([ms for _, ms in ok], 99),
        "server_loads": metrics.get("mlserve_model_loads_total"),
        "server_evictions": metrics.get("mlserve_model_evictions_total"),
        "server_cold_starts": cold_count,
        "server_cold_mean_ms": round(cold_sum / cold_count * 1000, 2) if cold_count else None,
        "server_models_loaded": metrics.get("mlserve_models_loaded"),
        "server_estimated_mb": round(metrics.get("mlserve_models_estimated_bytes", 0) / 2**20, 2),
        "rss_ready_mb": rss_ready,
        "rss_warm_mb": rss_warm,
        "rss_max_mb": max(during),
        "rss_end_mb": during[-1],
        "rss_samples": rss.samples,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 min, at the end
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rows", type=int, default=3000, help="training rows per model")
    parser.add_argument("--kind", choices=["tree", "logreg"], default="tree")
    parser.add_argument("--max-loaded", type=int, default=20)
    parser.add_argument("--budget-mb", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--zipf", type=float, default=1.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="many-models.json", help="file name in bench/out/")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlserve-many-"))
    try:
        registry = work / "registry"
        print(f"registering {args.models} models ...", flush=True)
        size = build_registry(registry, args.models, args.features, args.rows, args.kind, args.seed)
        sequence = zipf_sequence(args.models, args.requests, args.zipf, args.seed)
        distinct = len(set(sequence))
        runs = [
            (f"max_loaded={args.max_loaded}", {"max_loaded": args.max_loaded}, args.max_loaded),
            (f"memory_budget_mb={args.budget_mb}", {"memory_budget_mb": args.budget_mb}, 0),
            ("no budget", {}, 0),
        ]
        results = []
        per_model_mb = None
        for label, section, replay_limit in runs:
            if section.get("memory_budget_mb") and per_model_mb:
                # The budget holds as many models as fit by the server's own estimate (all
                # alike here), read from the previous run's gauges.
                replay_limit = int(args.budget_mb // per_model_mb)
            print(
                f"{label}: serving (LRU replay of {replay_limit or 'all'} models) ...", flush=True
            )
            home = work / label.replace("=", "-").replace(" ", "-")
            home.mkdir()
            cold = lru_replay([0, *sequence], replay_limit)[1:]  # after the warm-up request
            result = run_server(label, registry, home, section, sequence, cold, args)
            result["replay_limit"] = replay_limit
            if result["server_models_loaded"]:
                per_model_mb = result["server_estimated_mb"] / result["server_models_loaded"]
                result["estimate_per_model_kib"] = round(per_model_mb * 1024, 1)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}), flush=True)
        report = {
            "models": args.models,
            "kind": args.kind,
            "rows": args.rows,
            "features": args.features,
            "artifact_bytes": size,
            "zipf_a": args.zipf,
            "requests": len(sequence),
            "distinct_models_requested": distinct,
            "concurrency": args.concurrency,
            "cpu_count": os.cpu_count(),
            "runs": results,
        }
        OUT.mkdir(exist_ok=True)
        (OUT / args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {OUT / args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
