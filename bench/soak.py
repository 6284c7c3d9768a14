"""Soak test (not CI): 10 minutes of mixed traffic against a real `mlserve serve` — single and
batch predictions on a text and a tabular model, V2 inference, health, metrics and async jobs
(submit, poll, fetch, delete) — sampling the server's RSS and open file descriptors every 10 s.

Passes when, after the warm-up, RSS grows by at most --rss-bound-mb and open descriptors by
at most --fd-bound, and no request failed. Results: a summary on stdout and bench/out/soak.json.

Usage: python bench/soak.py [--duration 600] [--interval 10] [--warmup 60] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PY = sys.executable
TEXTS = [
    "The staff were lovely and the room was spotless",
    "Never again, the refund took three weeks",
    "The package arrived on Monday",
    "Great value, would buy again",
    "Rude staff and horrible service",
]
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlserve(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PY, "-m", "mlserve", *args], env=env, check=True, capture_output=True)


class Traffic:
    """Closed-loop clients sending a weighted mix of requests; counts outcomes by kind."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latencies: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.random = random.Random(seed)

    def record(self, kind: str, response: httpx.Response, ok: tuple[int, ...] = (200,)) -> None:
        with self.lock:
            self.outcomes[f"{kind} {response.status_code}"] += 1
            self.latencies.setdefault(kind, []).append(response.elapsed.total_seconds())
            if response.status_code not in ok and len(self.failures) < 20:
                self.failures.append(f"{kind}: {response.status_code} {response.text[:200]}")

    def mixed(self, worker: int) -> None:
        rng = random.Random(worker)
        kinds = ["text"] * 5 + ["iris"] * 3 + ["batch", "v2", "health", "metrics", "models"]
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                kind = rng.choice(kinds)
                try:
                    if kind == "text":
                        body = {"text": rng.choice(TEXTS) + f" #{i}", "model": "sentiment"}
                        self.record(kind, http.post("/api/predict", json=body))
                    elif kind == "iris":
                        body = {"features": rng.choice(FLOWERS), "model": "iris"}
                        self.record(kind, http.post("/api/predict", json=body))
                    elif kind == "batch":
                        body = {"texts": rng.sample(TEXTS, 5) * 4, "model": "sentiment"}
                        self.record(kind, http.post("/api/predict/batch", json=body))
                    elif kind == "v2":
                        tensor = {"name": "input", "shape": [3, 4], "datatype": "FP64"}
                        body = {"inputs": [{**tensor, "data": FLOWERS}]}
                        self.record(kind, http.post("/v2/models/iris/infer", json=body))
                    elif kind == "health":
                        self.record(kind, http.get("/api/health"))
                    elif kind == "metrics":
                        self.record(kind, http.get("/metrics"))
                    else:
                        self.record(kind, http.get("/api/models"))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.outcomes[f"{kind} transport-error"] += 1
                        self.failures.append(f"{kind}: {exc!r}")

    def jobs(self) -> None:
        """One async job at a time: submit 200 texts, poll, fetch as JSON lines, delete."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                try:
                    texts = [f"{t} {n}" for n, t in enumerate(TEXTS * 40)]
                    accepted = http.post(
                        "/api/predict/async", json={"texts": texts, "model": "sentiment"}
                    )
                    self.record("job-submit", accepted, ok=(202,))
                    if accepted.status_code != 202:
                        self.stop.wait(1)
                        continue
                    job = accepted.json()["job_id"]
                    deadline = time.monotonic() + 60
                    status = "pending"
                    while status not in ("completed", "failed") and time.monotonic() < deadline:
                        self.stop.wait(0.05)
                        status = http.get(f"/api/jobs/{job}").json()["status"]
                    result = http.get(f"/api/jobs/{job}/result", params={"format": "jsonl"})
                    self.record("job-result", result)
                    if result.status_code == 200 and len(result.text.splitlines()) != len(texts):
                        self.failures.append(f"job {job}: {len(result.text.splitlines())} lines")
                    self.record("job-delete", http.delete(f"/api/jobs/{job}"), ok=(204,))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.outcomes["job transport-error"] += 1
                        self.failures.append(f"job: {exc!r}")
                self.stop.wait(1.0)  # a job every second or so


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index] * 1000, 2)


def sample(proc: psutil.Process, started: float) -> dict[str, float]:
    with proc.oneshot():
        return {
            "t_s": round(time.monotonic() - started, 1),
            "rss_mb": round(proc.memory_info().rss / 2**20, 2),
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
            "cpu_s": round(sum(proc.cpu_times()[:2]), 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop mixed clients")
    parser.add_argument("--rss-bound-mb", type=float, default=25.0)
    parser.add_argument("--fd-bound", type=int, default=10)
    args = parser.parse_args()

    OUT.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="mlserve-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["MLSERVE_HOME"] = str(home)
    print(f"training the sample models in {home} ...", flush=True)
    mlserve(
        "train", "--sample", "sentiment", "--name", "sentiment", "--alias", "production", env=env
    )
    mlserve("train", "--sample", "iris", "--name", "iris", "--alias", "production", env=env)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (OUT / "soak-server.log").open("wb")
    server = subprocess.Popen(
        [
            PY,
            "-m",
            "mlserve",
            "serve",
            "--port",
            str(port),
            "--no-sample",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/api/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not become ready")
            time.sleep(0.2)
        proc = psutil.Process(server.pid)
        traffic = Traffic(url, seed=0)
        threads = [
            threading.Thread(target=traffic.mixed, args=(i,), daemon=True)
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(target=traffic.jobs, daemon=True))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples = []
        while True:
            samples.append(sample(proc, started))
            last = samples[-1]
            done = sum(traffic.outcomes.values())
            print(
                f"{last['t_s']:6.0f} s  rss {last['rss_mb']:7.1f} MB  fds {last['fds']:4d}  "
                f"threads {last['threads']:3d}  requests {done}",
                flush=True,
            )
            if time.monotonic() - started >= args.duration:
                break
            time.sleep(args.interval)
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        samples.append(sample(proc, started))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    warm = [s for s in samples if s["t_s"] >= args.warmup]
    baseline = warm[0]
    rss_growth = max(s["rss_mb"] for s in warm) - baseline["rss_mb"]
    fd_growth = max(s["fds"] for s in warm) - baseline["fds"]
    requests = sum(traffic.outcomes.values())
    result: dict[str, Any] = {
        "duration_s": args.duration,
        "clients": args.clients,
        "requests": requests,
        "requests_per_s": round(requests / max(1.0, samples[-1]["t_s"]), 1),
        "outcomes": dict(sorted(traffic.outcomes.items())),
        "latency_ms": {
            kind: {"p50": percentile(values, 50), "p99": percentile(values, 99)}
            for kind, values in sorted(traffic.latencies.items())
        },
        "failures": traffic.failures,
        "rss_mb": {
            "start": samples[0]["rss_mb"],
            "after_warmup": baseline["rss_mb"],
            "max": max(s["rss_mb"] for s in samples),
            "end": samples[-1]["rss_mb"],
            "growth_after_warmup": round(rss_growth, 2),
            "bound": args.rss_bound_mb,
        },
        "fds": {
            "start": samples[0]["fds"],
            "after_warmup": baseline["fds"],
            "max": max(s["fds"] for s in samples),
            "end": samples[-1]["fds"],
            "growth_after_warmup": fd_growth,
            "bound": args.fd_bound,
        },
        "samples": samples,
    }
    ok = rss_growth <= args.rss_bound_mb and fd_growth <= args.fd_bound and not traffic.failures
    result["passed"] = ok
    (OUT / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
