"""Overload benchmark (not CI): a real `mlserve serve` driven at 10x its sustainable rate.

1. Sustainable rate: a closed-loop `mlserve loadtest` (--concurrency) measures the throughput
   the server keeps up with.
2. Overload: an open-loop `mlserve loadtest --rate <factor x sustainable>` for --duration
   seconds. Requests beyond a model's queue (batching.max_queue) are shed with 503 +
   Retry-After; the loadtest counts them. A probe client (one connection, closed loop) shares
   the overloaded queue: its 2xx answers give the latency of *admitted* requests.
3. Recovery: as soon as the load stops, the probe's next requests show how fast latency is
   back to normal.
The server's RSS is sampled every second throughout. The server is pinned to core 0 and the
load generators to core 1 when `taskset` exists.

Usage: python bench/overload.py [--duration 30] [--factor 10] [--endpoint batch|predict]
         [--batch-size 50] [--max-queue 100] [--max-in-flight 4000]
The default request is a batch of 50 texts (the sample sentiment model): its sustainable rate
is low enough that one load-generator core can offer 10 times it; single predictions are
cheap enough (several thousand per second) that 10x cannot be generated on this machine.
Results: a summary on stdout and bench/out/overload.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PY = sys.executable
TASKSET = shutil.which("taskset")
PROBE_TEXT = "The staff were lovely and the room was spotless"


def pinned(core: int, cmd: list[str]) -> list[str]:
    return [TASKSET, "-c", str(core), *cmd] if TASKSET else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index], 2)


def loadtest(url: str, args: list[str], report: Path, limit_s: float) -> dict[str, Any]:
    cmd = [PY, "-m", "mlserve", "loadtest", "--url", url, "--quiet", "--json", str(report)]
    subprocess.run(pinned(1, [*cmd, *args]), check=False, capture_output=True, timeout=limit_s)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


class Probe:
    """One closed-loop connection sending the same request as the load, timing each answer."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        self.url, self.path, self.body = url, path, body
        self.records: list[tuple[float, int, float]] = []  # (time, status, ms)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = http.post(self.path, json=self.body).status_code
                except httpx.HTTPError:
                    status = 0
                ms = (time.perf_counter() - started) * 1000.0
                self.records.append((time.monotonic(), status, ms))

    def window(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [r for r in self.records if start <= r[0] < end]


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psutil.Error):
                rss = self.proc.memory_info().rss / 2**20
                self.samples.append((time.monotonic(), round(rss, 2)))
            self.stop.wait(1.0)

    def between(self, start: float, end: float) -> list[float]:
        return [rss for t, rss in self.samples if start <= t <= end]


def summary(records: list[tuple[float, int, float]]) -> dict[str, Any]:
    ok = [ms for _, status, ms in records if 200 <= status < 300]
    return {
        "requests": len(records),
        "ok": len(ok),
        "shed_503": sum(1 for _, status, _ in records if status == 503),
        "other": sum(1 for _, status, _ in records if status not in (503,) and status >= 300),
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "max_ms": round(max(ok), 2) if ok else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of overload")
    parser.add_argument("--factor", type=float, default=10.0, help="x the sustainable rate")
    parser.add_argument("--endpoint", choices=["predict", "batch"], default="batch")
    parser.add_argument("--batch-size", type=int, default=50, help="texts per batch request")
    parser.add_argument("--max-queue", type=int, default=100, help="batching.max_queue")
    parser.add_argument("--max-in-flight", type=int, default=4000, help="open-loop cap")
    parser.add_argument("--max-batch-size", type=int, default=64, help="batching.max_batch_size")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections")
    args = parser.parse_args()

    OUT.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="mlserve-overload-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env.update(
        MLSERVE_HOME=str(home),
        MLSERVE_BATCHING__MAX_QUEUE=str(args.max_queue),
        MLSERVE_BATCHING__MAX_BATCH_SIZE=str(args.max_batch_size),
    )
    print(f"training the sample sentiment model in {home} ...", flush=True)
    subprocess.run(
        [PY, "-m", "mlserve", "train", "--sample", "sentiment", "--name", "sentiment",
         "--alias", "production"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (OUT / "overload-server.log").open("wb")
    server = subprocess.Popen(
        pinned(0, [PY, "-m", "mlserve", "serve", "--port", str(port), "--no-sample",
                   "--log-level", "warning"]),
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    if args.endpoint == "batch":
        path, body = "/api/predict/batch", {"texts": [PROBE_TEXT] * args.batch_size}
        load_args = ["--endpoint", "batch", "--batch-size", str(args.batch_size)]
    else:
        path, body = "/api/predict", {"text": PROBE_TEXT}
        load_args = ["--endpoint", "predict"]
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/api/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not become ready")
            time.sleep(0.2)
        pid = psutil.Process(server.pid)
        server_pid = next((c.pid for c in pid.children(recursive=True)), server.pid)
        rss = RssSampler(server_pid)
        rss.thread.start()
        t0 = time.monotonic()

        print("measuring the sustainable rate (closed loop, 10 s) ...", flush=True)
        sustainable = loadtest(
            url,
            [*load_args, "--concurrency", str(args.concurrency), "--duration", "10s",
             "--warmup", "3s"],
            OUT / "overload-sustainable.json",
            limit_s=120,
        )  # fmt: skip
        rate = float(sustainable["throughput"])
        target = round(rate * args.factor)
        print(f"sustainable {rate:.0f} req/s; overload at {target} req/s for {args.duration:.0f} s")

        probe = Probe(url, path, body)
        probe.thread.start()
        time.sleep(3.0)  # the probe's baseline, before the overload
        load_start = time.monotonic()
        overload = loadtest(
            url,
            [*load_args, "--rate", str(target), "--duration", f"{args.duration:.0f}s",
             "--max-in-flight", str(args.max_in_flight), "--timeout", "30"],
            OUT / "overload-open-loop.json",
            limit_s=args.duration * args.factor + 300,  # every scheduled request is sent
        )  # fmt: skip
        load_end = time.monotonic()
        time.sleep(5.0)  # recovery, seen by the probe
        probe.stop.set()
        probe.thread.join(timeout=30)
        t_end = time.monotonic()
        metrics = httpx.get(url + "/metrics", timeout=10).text
        rss.stop.set()
        rss.thread.join(timeout=5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    shed_metric = next(
        (float(line.split()[-1]) for line in metrics.splitlines()
         if line.startswith('mlserve_errors_total{code="overloaded"}')),
        0.0,
    )  # fmt: skip
    after = probe.window(load_end, t_end)
    first_after = after[0] if after else None
    codes = overload["status_codes"]
    result: dict[str, Any] = {
        "endpoint": path,
        "batch_size": args.batch_size if args.endpoint == "batch" else None,
        "max_queue": args.max_queue,
        "max_batch_size": args.max_batch_size,
        "max_in_flight": args.max_in_flight,
        "sustainable": {
            "throughput_rps": round(rate, 1),
            "p50_ms": sustainable["latencies"].get("p50"),
            "p99_ms": sustainable["latencies"].get("p99"),
            "concurrency": args.concurrency,
        },
        "overload": {
            "target_rate_rps": target,
            "offered_rate_rps": overload["rate"],
            "duration_s": round(load_end - load_start, 1),
            "requests": overload["requests"],
            "status_codes": codes,
            "admitted_2xx": sum(n for c, n in codes.items() if c.startswith("2")),
            "shed_503": codes.get("503", 0),
            "shed_metric_overloaded_total": shed_metric,
            "transport_errors": overload["transport_errors"],
            "admitted_throughput_rps": overload["throughput"],
            "all_answers_p50_ms": overload["latencies"].get("p50"),
            "all_answers_p99_ms": overload["latencies"].get("p99"),
            "schedule": overload["schedule"],
        },
        "probe": {
            "before": summary(probe.window(load_start - 3.0, load_start)),
            "during": summary(probe.window(load_start, load_end)),
            "after_5s": summary(after),
            "first_after_ms": round(first_after[2], 2) if first_after else None,
            "first_after_status": first_after[1] if first_after else None,
            "after_first_50": summary(after[:50]),
        },
        "rss_mb": {
            "start": rss.between(t0, t0 + 1.5)[0] if rss.samples else None,
            "before_overload": rss.between(t0, load_start)[-1] if rss.samples else None,
            "max_during": max(rss.between(load_start, load_end), default=None),
            "end": rss.samples[-1][1] if rss.samples else None,
            "samples": [rss for _, rss in rss.samples],
        },
    }
    (OUT / "overload.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb"}, indent=2))
    printable = {k: v for k, v in result["rss_mb"].items() if k != "samples"}
    print("rss_mb", json.dumps(printable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
