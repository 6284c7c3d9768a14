"""Serving benchmark: mlserve (batching on/off) against a tutorial-pattern baseline and two
ceilings (bare FastAPI, raw ASGI), driven by wrk on loopback, plus in-process model rates.

Usage: python bench/run.py [--duration 8] [--concurrency 1,8,64,128] [--quick] [--only NAMES]
Servers are pinned to core 0 and wrk to core 1 when `taskset` exists. Results: a table on
stdout, bench/out/results.json, and (with matplotlib) docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PY = sys.executable
TASKSET = shutil.which("taskset")
WRK = shutil.which("wrk")


def pinned(core: int, cmd: list[str]) -> list[str]:
    return [TASKSET, "-c", str(core), *cmd] if TASKSET else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_texts() -> list[str]:
    path = importlib.resources.files("mlserve.samples") / "sentiment.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


def wait_http(url: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, probe: str):
        self.name, self.port, self.probe = name, port, probe
        self.log = open(OUT / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(pinned(0, cmd), env=env, stdout=self.log, stderr=self.log)

    def __enter__(self) -> Server:
        wait_http(f"http://127.0.0.1:{self.port}{self.probe}")
        return self

    def rss_mb(self) -> float:
        proc = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def parse_wrk(text: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    out: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        out[f"p{pct}_ms"] = ms(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"(\d+) requests in", text)
    total = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors += sum(int(g) for g in m.groups()) if m else 0
    out["requests"] = total
    out["errors"] = errors
    return out


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = pinned(1, [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
                     str(script), url])  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    return parse_wrk(res.stdout)


def run_loadtest(url: str, connections: int, duration: int) -> dict[str, float] | None:
    cmd = pinned(1, [PY, "-m", "mlserve", "loadtest", "--url", url, "--concurrency",
                     str(connections), "--duration", f"{duration}s", "--json", "-", "--quiet"])  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        return None
    lat = data.get("latencies", {})
    return {
        "rps": data.get("throughput", 0.0),
        "p50_ms": lat.get("50th"),
        "p99_ms": lat.get("99th"),
    }


def in_process_rates(model_path: Path, texts: list[str], seconds: float = 3.0) -> dict[str, float]:
    code = f"""
import json, time, joblib
m = joblib.load({str(model_path)!r}); texts = {texts[:500]!r}
def rate(size):
    n = 0; i = 0; t = time.perf_counter()
    while time.perf_counter() - t < {seconds}:
        batch = texts[i:i + size] if i + size <= len(texts) else texts[:size]
        m.predict_proba(batch); n += len(batch); i = (i + size) % (len(texts) - size)
    return n / (time.perf_counter() - t)
print(json.dumps({{"one_per_call": rate(1), "batch_64": rate(64), "batch_100": rate(100)}}))
"""
    res = subprocess.run(pinned(0, [PY, "-c", code]), capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,8,64,128")
    parser.add_argument("--quick", action="store_true", help="only 64 connections")
    parser.add_argument("--only", default="", help="comma-separated server names (prefixes)")
    args = parser.parse_args()
    if not WRK:
        sys.exit("wrk is required (apt-get install wrk)")
    OUT.mkdir(exist_ok=True)
    levels = [64] if args.quick else [int(c) for c in args.concurrency.split(",")]
    duration = args.duration
    work = Path(tempfile.mkdtemp(prefix="mlserve-bench-"))
    env = {**os.environ, "MLSERVE_HOME": str(work)}
    model_path = work / "sentiment.joblib"
    subprocess.run([PY, "-m", "mlserve", "train", "--sample", "sentiment", "--name", "sentiment",
                    "--alias", "production", "--output", str(model_path), "--json"],
                   env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    texts = sample_texts()
    results: dict[str, object] = {"duration_s": duration, "taskset": bool(TASKSET)}
    results["in_process_texts_per_s"] = in_process_rates(model_path, texts)

    quiet = {"MLSERVE_LOGGING__ACCESS_LOG": "false", "MLSERVE_LOGGING__LEVEL": "warning"}
    servers = {
        "mlserve": ([PY, "-m", "mlserve", "serve"], quiet, "/api/ready"),
        "mlserve (batching off)": (
            [PY, "-m", "mlserve", "serve"], {**quiet, "MLSERVE_BATCHING__ENABLED": "false"},
            "/api/ready",
        ),
        "mlserve (feedback off)": (
            [PY, "-m", "mlserve", "serve"], {**quiet, "MLSERVE_FEEDBACK__ENABLED": "false"},
            "/api/ready",
        ),
        "tutorial pattern": ([PY, "-m", "uvicorn", "tutorial:app"], {}, "/docs"),
        "bare FastAPI (no model)": ([PY, "-m", "uvicorn", "bare_fastapi:app"], {}, "/docs"),
        "raw ASGI (no model)": ([PY, "-m", "uvicorn", "raw_asgi:app"], {}, "/"),
    }  # fmt: skip
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        servers = {k: v for k, v in servers.items() if any(k.startswith(w) for w in wanted)}
    table: dict[str, dict[str, object]] = {}
    for name, (cmd, extra_env, probe) in servers.items():
        port = free_port()
        full = [*cmd, "--port", str(port)]
        if "uvicorn" in cmd:
            full += ["--no-access-log", "--log-level", "warning", "--app-dir", str(HERE / "apps")]
        server_env = {**env, **extra_env, "BENCH_MODEL": str(model_path)}
        row: dict[str, object] = {}
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        with Server(slug, full, server_env, port, probe) as server:
            url = f"http://127.0.0.1:{port}/api/predict"
            run_wrk(url, HERE / "predict.lua", 8, 2)  # warm-up
            for c in levels:
                row[f"wrk_c{c}"] = run_wrk(url, HERE / "predict.lua", c, duration)
            row["rss_mb"] = round(server.rss_mb(), 1)
            if name.startswith("mlserve"):
                row["loadtest_c64"] = run_loadtest(f"http://127.0.0.1:{port}", 64, duration)
                batch_url = f"http://127.0.0.1:{port}/api/predict/batch"
                batch = run_wrk(batch_url, HERE / "batch.lua", 8, duration)
                batch["texts_per_s"] = batch["rps"] * 100
                row["batch_100_c8"] = batch
        table[name] = row
        print(f"done: {name}", file=sys.stderr)
    results["servers"] = table
    partial = bool(args.only)  # a partial run leaves the full results and the plot alone
    (OUT / ("results-partial.json" if partial else "results.json")).write_text(
        json.dumps(results, indent=2)
    )
    report(results, levels)
    if not partial:
        plot(results, levels)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict, levels: list[int]) -> None:
    servers = results["servers"]

    def c64_rps(name: str) -> float | None:
        return servers[name]["wrk_c64"]["rps"] if 64 in levels and name in servers else None

    ceiling = c64_rps("bare FastAPI (no model)")
    baseline = c64_rps("tutorial pattern")
    print("\n| server | " + " | ".join(f"req/s c={c}" for c in levels)
          + " | p50 c=64 | p99 c=64 | p50 c=1 | errors | RSS MB |")  # fmt: skip
    print("|---" * (len(levels) + 6) + "|")
    for name, row in servers.items():
        cells = [f"{row[f'wrk_c{c}']['rps']:,.0f}" for c in levels]
        c64 = row.get("wrk_c64", {})
        c1 = row.get("wrk_c1", {})
        errors = sum(int(row[f"wrk_c{c}"]["errors"]) for c in levels)
        print(f"| {name} | " + " | ".join(cells)
              + f" | {c64.get('p50_ms', float('nan')):.2f} | {c64.get('p99_ms', float('nan')):.2f}"
              f" | {c1.get('p50_ms', float('nan')):.2f} | {errors} | {row['rss_mb']} |")  # fmt: skip
    inproc = results["in_process_texts_per_s"]
    print(f"\nin-process predict_proba: {inproc['one_per_call']:,.0f} texts/s one per call, "
          f"{inproc['batch_64']:,.0f} in batches of 64, {inproc['batch_100']:,.0f} of 100")  # fmt: skip
    if "mlserve" not in servers:
        return
    ml = servers["mlserve"]
    without = c64_rps("mlserve (feedback off)")
    if without:
        rps = ml["wrk_c64"]["rps"]
        print(f"recording predictions for feedback (c=64): {rps:,.0f} req/s on, {without:,.0f} off "
              f"({rps / without - 1:+.1%})")  # fmt: skip
    if ceiling and baseline:
        rps = ml["wrk_c64"]["rps"]
        print(f"mlserve c=64: {rps / baseline:.1f}x the tutorial baseline, "
              f"{rps / ceiling:.0%} of the bare-FastAPI ceiling")  # fmt: skip
    if "batch_100_c8" in ml:
        share = ml["batch_100_c8"]["texts_per_s"] / inproc["batch_100"]
        print(f"/api/predict/batch (100 texts, c=8): {ml['batch_100_c8']['texts_per_s']:,.0f} "
              f"texts/s = {share:.0%} of in-process batched predict_proba")  # fmt: skip
    lt = ml.get("loadtest_c64")
    if lt:
        print(f"mlserve loadtest c=64 on mlserve: {lt['rps']:,.0f} req/s, p50 {lt['p50_ms']:.2f} ms,"
              f" p99 {lt['p99_ms']:.2f} ms")  # fmt: skip


def plot(results: dict, levels: list[int]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, row in results["servers"].items():
        ax1.plot(levels, [row[f"wrk_c{c}"]["rps"] for c in levels], marker="o", label=name)
        ax2.plot(levels, [row[f"wrk_c{c}"]["p99_ms"] for c in levels], marker="o", label=name)
    ax1.set(xscale="log", xlabel="connections", ylabel="requests/s", title="Throughput (1 core)")
    ax2.set(xscale="log", yscale="log", xlabel="connections", ylabel="p99 latency (ms)",
            title="p99 latency")  # fmt: skip
    ax1.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    target = ROOT / "docs" / "benchmarks.png"
    target.parent.mkdir(exist_ok=True)
    fig.savefig(target, dpi=110)
    print(f"plot: {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
