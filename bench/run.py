"""Serving benchmark: mlserve (batching on/off) against a tutorial-pattern baseline and two
ceilings (bare FastAPI, raw ASGI), driven by wrk on loopback, plus in-process model rates.

Usage: python bench/run.py [--duration 8] [--concurrency 1,8,64,128] [--quick] [--only NAMES]
       python bench/run.py --peers [--models sample,heavy] [--duration 8]
With --peers: mlserve side by side with MLServer and BentoML (bench/peers.py), on the bundled
sample model and the heavier TF-IDF-bigram model of issue 20.
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


def serve_sample(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Train the bundled sentiment sample into `home` (env's MLSERVE_HOME) and start
    `mlserve serve` over it, pinned to core 0, logging to home/server.log; returns the process
    (not waited for) and its URL. It runs in `home`: `python -m` puts its working folder first
    on sys.path, so from the repository root a PYTHONPATH (the scripts' --src) was ignored."""
    subprocess.run(
        [PY, "-m", "mlserve", "train", "--sample", "sentiment", "--name", "sentiment",
         "--alias", "production"],
        env=env, check=True, capture_output=True, cwd=home,
    )  # fmt: skip
    port = free_port()
    with (home / "server.log").open("wb") as log:  # the child keeps its own copy
        server = subprocess.Popen(
            pinned(0, [PY, "-m", "mlserve", "serve", "--port", str(port), "--no-sample"]),
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
        )  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


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
    if "--peers" in sys.argv[1:]:
        import peers  # the peers run has its own options (bench/peers.py)

        peers.main([a for a in sys.argv[1:] if a != "--peers"])
        return
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
    before = in_process_rates(model_path, texts)

    quiet = {"MLSERVE_LOGGING__ACCESS_LOG": "false", "MLSERVE_LOGGING__LEVEL": "warning"}
    servers = {
        "mlserve": ([PY, "-m", "mlserve", "serve"], quiet, "/api/ready"),
        # Every default, the access log included (one line a request, written in blocks).
        "mlserve (access log on)": ([PY, "-m", "mlserve", "serve"], {}, "/api/ready"),
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
    after = in_process_rates(model_path, texts)
    results["in_process_runs"] = [before, after]
    # The higher of the two: the ratios against it are the conservative ones.
    results["in_process_texts_per_s"] = {k: max(before[k], after[k]) for k in before}
    partial = bool(args.only)  # a partial run leaves the full results and the plot alone
    (OUT / ("results-partial.json" if partial else "results.json")).write_text(
        json.dumps(results, indent=2)
    )
    lines = report(results, levels)
    if not partial:
        write_markdown(lines, results)
        plot(results, levels)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict, levels: list[int]) -> list[str]:
    """The results as markdown lines (printed, and written into docs/benchmarks.md)."""
    servers = results["servers"]
    out: list[str] = []

    def c64(name: str, key: str = "rps") -> float | None:
        row = servers.get(name, {}).get("wrk_c64")
        return row[key] if row else None

    out.append("| server | " + " | ".join(f"req/s c={c}" for c in levels)
               + " | p50 c=64 ms | p99 c=64 ms | p50 c=1 ms | errors | RSS MB |")  # fmt: skip
    out.append("|---" * (len(levels) + 6) + "|")
    for name, row in servers.items():
        cells = [f"{row[f'wrk_c{c}']['rps']:,.0f}" for c in levels]
        r64 = row.get("wrk_c64", {})
        r1 = row.get("wrk_c1", {})
        errors = sum(int(row[f"wrk_c{c}"]["errors"]) for c in levels)
        out.append(f"| {name} | " + " | ".join(cells)
                   + f" | {r64.get('p50_ms', float('nan')):.2f} | {r64.get('p99_ms', float('nan')):.2f}"
                   f" | {r1.get('p50_ms', float('nan')):.2f} | {errors} | {row['rss_mb']} |")  # fmt: skip
    inproc = results["in_process_texts_per_s"]
    out.append("")
    out.append(f"In-process `predict_proba` (the same pipeline, core 0; the higher of a run before "
               f"and after the servers): {inproc['one_per_call']:,.0f} texts/s one per call, "
               f"{inproc['batch_64']:,.0f} in batches of 64, {inproc['batch_100']:,.0f} "
               f"in batches of 100.")  # fmt: skip
    variants = [n for n in servers if n.startswith("mlserve")]
    if variants:
        out += ["", "| mlserve variant | batch endpoint, 100 texts, c=8: texts/s | share of "
                "in-process batches of 100 | batch p99 ms | `mlserve loadtest` c=64 req/s "
                "(p50 / p99 ms) |", "|---|---|---|---|---|"]  # fmt: skip
        for name in variants:
            row = servers[name]
            batch = row.get("batch_100_c8") or {}
            lt = row.get("loadtest_c64") or {}
            share = batch.get("texts_per_s", 0.0) / inproc["batch_100"]
            lt_cell = (f"{lt['rps']:,.0f} ({lt['p50_ms']:.2f} / {lt['p99_ms']:.2f})"
                       if lt.get("rps") else "-")  # fmt: skip
            out.append(f"| {name} | {batch.get('texts_per_s', 0.0):,.0f} | {share:.0%} | "
                       f"{batch.get('p99_ms', float('nan')):.1f} | {lt_cell} |")  # fmt: skip
    ml, baseline, ceiling = "mlserve", "tutorial pattern", "bare FastAPI (no model)"
    if ml in servers and baseline in servers and ceiling in servers and 64 in levels:
        rps, p99 = c64(ml) or 0.0, c64(ml, "p99_ms") or float("nan")
        base, top = c64(baseline) or 1.0, c64(ceiling) or 1.0
        batch_share = servers[ml]["batch_100_c8"]["texts_per_s"] / inproc["batch_100"]
        checks = [
            (f"single-text c=64 ≥ 4× the tutorial baseline: {rps / base:.1f}×", rps >= 4 * base),
            (f"≥ 2/3 of the bare-FastAPI ceiling: {rps / top:.0%}", rps >= 2 / 3 * top),
            (f"stretch, ≥ the ceiling: {rps / top:.0%}", rps >= top),
            (f"p99 at c=64 < 25 ms: {p99:.1f} ms", p99 < 25),
            (f"batch endpoint ≥ 70% of in-process batches of 100: {batch_share:.0%}",
             batch_share >= 0.70),
        ]  # fmt: skip
        if 1 in levels:
            mine = servers[ml]["wrk_c1"]["p50_ms"]
            theirs = servers[baseline]["wrk_c1"]["p50_ms"]
            checks.append((f"p50 at c=1 ≤ the baseline's: {mine:.2f} vs {theirs:.2f} ms",
                           mine <= theirs))  # fmt: skip
        logged = "mlserve (access log on)"
        if logged in servers:  # the same targets with every default a user gets
            rps_on, p99_on = c64(logged) or 0.0, c64(logged, "p99_ms") or float("nan")
            checks += [
                (f"access log on: ≥ 4× the tutorial baseline: {rps_on / base:.1f}×",
                 rps_on >= 4 * base),
                (f"access log on: ≥ 2/3 of the bare-FastAPI ceiling: {rps_on / top:.0%}",
                 rps_on >= 2 / 3 * top),
                (f"access log on: stretch, ≥ the ceiling: {rps_on / top:.0%}", rps_on >= top),
                (f"access log on: p99 at c=64 < 25 ms: {p99_on:.1f} ms", p99_on < 25),
            ]  # fmt: skip
        off = c64("mlserve (feedback off)")
        out += ["", "Targets (ratios from this run):", ""]
        out += [f"- {'met' if ok else '**missed**'}: {text}" for text, ok in checks]
        if off:
            out.append(f"- recording every prediction for feedback costs {1 - rps / off:.1%} "
                       f"of single-text throughput ({rps:,.0f} vs {off:,.0f} req/s off)")  # fmt: skip
    print("\n" + "\n".join(out))
    return out


MARK_START, MARK_END = "<!-- bench/run.py results: start -->", "<!-- bench/run.py results: end -->"


def write_markdown(lines: list[str], results: dict) -> None:
    """Replace the generated part of docs/benchmarks.md (between the markers), keeping the rest."""
    target = ROOT / "docs" / "benchmarks.md"
    stamp = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{results['duration_s']} s per wrk run, taskset pinning: "
             f"{'yes' if results['taskset'] else 'no'}, {os.cpu_count()} cores.")  # fmt: skip
    block = "\n".join([MARK_START, "", stamp, "", *lines, "", MARK_END])
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        text = "# Benchmarks\n\n" + block + "\n"
    target.parent.mkdir(exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)


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
