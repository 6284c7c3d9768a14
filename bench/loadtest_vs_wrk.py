"""Accuracy of `mlserve loadtest` against wrk: same server, same concurrency, same bodies.

Usage: python bench/loadtest_vs_wrk.py [--duration 10] [--concurrency 1,8,64] [--repeat 3]
                                       [--servers trivial,mlserve] [--engines raw,aiohttp]

Servers run pinned to core 0 and the load generators to core 1 (taskset). The trivial server is
a raw ASGI app on uvicorn (httptools, uvloop) answering fixed JSON; the real one is
`mlserve serve` over the bundled sentiment model trained into a temporary registry. Runs of wrk
and of the loadtest alternate, `--repeat` times; the table gives medians of each figure, and
the Δ% columns the median of the per-pair differences (each run against its neighbour). The loadtest
runs the same library calls as `mlserve loadtest` (target, preflight, engine, summary) so that
its raw latencies and its own CPU time come back: requests per CPU-second (wrk's read from
RUSAGE_CHILDREN) is each generator's ceiling on one core, and hardly moves with the machine's
load, unlike rates and latencies. wrk corrects its latencies for coordinated omission (stats_correct: synthetic samples for
every latency above twice the mean per-connection interval); column "lt p50*" applies the same
correction to the loadtest's raw latencies. Results: a table on stdout and
bench/out/loadtest_vs_wrk.json.

`python bench/loadtest_vs_wrk.py trivial-server PORT` runs the trivial server alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PY = sys.executable
TASKSET = shutil.which("taskset")
WRK = shutil.which("wrk")

BODY = b'{"prediction":"positive","confidence":0.93,"probabilities":{"negative":0.07}}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-process-time", b"0.010"),
]


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Fixed JSON for any request: the cheapest server an HTTP stack allows."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def serve_trivial(port: int) -> None:
    import uvicorn

    uvicorn.run(
        trivial_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="off",
    )


def pinned(core: int, cmd: list[str]) -> list[str]:
    return [TASKSET, "-c", str(core), *cmd] if TASKSET else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback
                if resp.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def lua_script(bodies: list[bytes], path: Path) -> Path:
    """wrk sends the loadtest's own bodies, in the same round-robin order."""
    items = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
    path.write_text(
        f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{items}
}}
local n = #bodies
local i = 0
request = function()
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
""",
        encoding="utf-8",
    )
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = pinned(
        1,
        [WRK or "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
        + [url],
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = res.stdout
    out: dict[str, float] = {"rps": float("nan"), "p50": float("nan"), "p99": float("nan")}
    if m := re.search(r"(\d+) requests in", text):
        out["req_per_cpu_s"] = int(m[1]) / cpu if cpu > 0 else float("nan")
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m[1])
    for pct in ("50", "99"):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
            out[f"p{pct}"] = _ms(m[1], m[2])
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(m[1])
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    return out


# The loadtest runs through the same library calls as `mlserve loadtest` (build the target,
# run the engine, summarize) in a process of its own, so that its raw latencies and its own CPU
# time (start-up excluded) come back too.
LOADTEST_SNIPPET = """
import json, resource, sys
from pathlib import Path
from mlserve import loadtest as lt
base, conc, duration, engine, data, raw = sys.argv[1:7]
target = lt.build_target(url=base, payloads=lt.load_payloads(Path(data)))
plan = lt.LoadPlan(concurrency=int(conc), duration=float(duration), engine=engine).validate()
lt.preflight(target, plan)
before = resource.getrusage(resource.RUSAGE_SELF)
result = lt.run_engine(target, plan)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
summary = lt.summarize(result)
report = lt.report_dict(summary, target=target, plan=plan)
report["cpu_s"] = cpu
with open(raw, "wb") as fh:
    result.latencies_ms.tofile(fh)
print(json.dumps(report))
"""


def wrk_corrected(latencies_ms: list[float], runtime_s: float, connections: int) -> float:
    """p50 after wrk's own coordinated-omission correction (stats_correct in wrk's stats.c).

    wrk adds synthetic samples at n - k*interval for every recorded latency n >= 2*interval,
    interval being the mean time per request of one connection; its percentiles include them.
    """
    from collections import Counter

    counts = Counter(int(v * 1000) for v in latencies_ms)  # wrk keeps microsecond buckets
    if not counts:
        return float("nan")
    per_connection = len(latencies_ms) // connections
    if per_connection:
        expected = int(runtime_s * 1e6) // per_connection
        for n, count in sorted(counts.items()):
            if expected <= 0 or n < 2 * expected:
                continue
            m = n - expected
            while m > expected:
                counts[m] += count
                m -= expected
    total = sum(counts.values())
    rank = round(0.5 * total + 0.5)
    seen = 0
    for n in sorted(counts):
        seen += counts[n]
        if seen >= rank:
            return n / 1000.0
    return float("nan")


def run_loadtest(
    base: str, connections: int, duration: int, engine: str, data: Path
) -> dict[str, float]:
    raw = data.with_suffix(".raw")
    cmd = pinned(
        1,
        [PY, "-c", LOADTEST_SNIPPET, base, str(connections), str(duration), engine, str(data)]
        + [str(raw)],
    )
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 90, check=False)
    try:
        report = json.loads(res.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(res.stderr)
        nan = float("nan")
        return {"rps": nan, "p50": nan, "p99": nan, "p50_wrk_style": nan, "req_per_cpu_s": nan}
    from array import array

    latencies = array("d")
    with raw.open("rb") as fh:
        latencies.frombytes(fh.read())
    lat = report["latencies"]
    return {
        "rps": report["throughput"],
        "p50": lat["50th"],
        "p99": lat["99th"],
        "p50_wrk_style": wrk_corrected(list(latencies), report["duration"] / 1000, connections),
        "req_per_cpu_s": report["requests"] / report["cpu_s"] if report["cpu_s"] else float("nan"),
    }


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], probe: str) -> None:
        self.name = name
        OUT.mkdir(exist_ok=True)
        self.log = (OUT / f"loadtest_vs_wrk-{name}.log").open("w")
        self.proc = subprocess.Popen(pinned(0, cmd), env=env, stdout=self.log, stderr=self.log)
        self.probe = probe

    def __enter__(self) -> Server:
        wait_http(self.probe, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def diff(ours: float, theirs: float) -> float:
    return (ours - theirs) / theirs * 100.0 if theirs and theirs == theirs else float("nan")


def paired(runs: dict[str, list[dict[str, float]]], engine: str, ours: str, theirs: str) -> float:
    """Median of the per-pair differences (%): each loadtest run against its neighbouring wrk
    run, which shared the machine's load of the moment."""
    return median(
        [diff(o[ours], w[theirs]) for o, w in zip(runs[engine], runs["wrk"], strict=True)]
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "trivial-server":
        serve_trivial(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per cell")
    parser.add_argument("--servers", default="trivial,mlserve")
    parser.add_argument("--engines", default="raw", help="loadtest engines: raw,aiohttp")
    args = parser.parse_args()
    if not WRK:
        sys.exit("wrk is required (apt-get install wrk)")
    levels = [int(c) for c in args.concurrency.split(",")]
    engines = args.engines.split(",")
    work = Path(tempfile.mkdtemp(prefix="mlserve-lt-bench-"))
    env = {
        **os.environ,
        "MLSERVE_HOME": str(work),
        "MLSERVE_LOGGING__ACCESS_LOG": "false",
        "MLSERVE_LOGGING__LEVEL": "warning",
    }
    from mlserve.loadtest import Payloads, build_target, sample_texts

    texts = sample_texts()
    data = work / "texts.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    bodies = [
        b for b in build_target(url="http://x", payloads=Payloads(texts=tuple(texts))).bodies if b
    ]
    script = lua_script(bodies, work / "predict.lua")

    servers: dict[str, tuple[list[str], str]] = {}
    if "trivial" in args.servers:
        port = free_port()
        servers["trivial"] = (
            [PY, str(Path(__file__).resolve()), "trivial-server", str(port)],
            f"http://127.0.0.1:{port}",
        )
    if "mlserve" in args.servers:
        registry = work / "registry"
        subprocess.run(
            [PY, "-m", "mlserve", "train", "--sample", "sentiment", "--registry", str(registry)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        servers["mlserve"] = (
            [PY, "-m", "mlserve", "serve", "--registry", str(registry), "--port", str(port)],
            f"http://127.0.0.1:{port}",
        )

    rows: list[dict[str, Any]] = []
    for name, (cmd, base) in servers.items():
        probe = base + ("/api/ready" if name == "mlserve" else "/")
        with Server(name, cmd, env, probe):
            url = base + "/api/predict"
            run_wrk(url, script, 8, 2)  # warm the server up
            for c in levels:
                runs: dict[str, list[dict[str, float]]] = {"wrk": []}
                runs.update({e: [] for e in engines})
                for i in range(args.repeat):
                    # Alternate who goes first, so a drift in the machine's load hits both.
                    if i % 2 == 0:
                        runs["wrk"].append(run_wrk(url, script, c, args.duration))
                    for e in engines:
                        runs[e].append(run_loadtest(base, c, args.duration, e, data))
                    if i % 2 == 1:
                        runs["wrk"].append(run_wrk(url, script, c, args.duration))
                wrk = {
                    k: median([r.get(k, float("nan")) for r in runs["wrk"]])
                    for k in ("rps", "p50", "p99", "req_per_cpu_s")
                }
                for e in engines:
                    ours = {
                        k: median([r[k] for r in runs[e]])
                        for k in ("rps", "p50", "p99", "p50_wrk_style", "req_per_cpu_s")
                    }
                    row = {
                        "server": name,
                        "concurrency": c,
                        "engine": e,
                        "wrk_rps": wrk["rps"],
                        "loadtest_rps": ours["rps"],
                        "rps_diff_pct": paired(runs, e, "rps", "rps"),
                        "wrk_p50_ms": wrk["p50"],
                        "loadtest_p50_ms": ours["p50"],
                        "p50_diff_pct": paired(runs, e, "p50", "p50"),
                        "loadtest_p50_wrk_style_ms": ours["p50_wrk_style"],
                        "p50_wrk_style_diff_pct": paired(runs, e, "p50_wrk_style", "p50"),
                        "wrk_p99_ms": wrk["p99"],
                        "loadtest_p99_ms": ours["p99"],
                        "loadtest_req_per_cpu_s": ours["req_per_cpu_s"],
                        "wrk_req_per_cpu_s": wrk["req_per_cpu_s"],
                        "all_runs": runs,
                    }
                    rows.append(row)
                    print(_line(row), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "loadtest_vs_wrk.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print()
    print(_header())
    for row in rows:
        print(_line(row))


def _header() -> str:
    return (
        f"{'server':8} {'c':>3} {'engine':7} | {'wrk rps':>9} {'lt rps':>9} {'Δ%':>6} | "
        f"{'wrk p50':>8} {'lt p50':>8} {'Δ%':>6} {'lt p50*':>8} {'Δ%':>6} | "
        f"{'wrk p99':>8} {'lt p99':>8} | {'wrk req/cpu-s':>13} {'lt req/cpu-s':>12}"
    )


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['server']:8} {row['concurrency']:>3} {row['engine']:7} | "
        f"{row['wrk_rps']:>9,.0f} {row['loadtest_rps']:>9,.0f} {row['rps_diff_pct']:>+6.1f} | "
        f"{row['wrk_p50_ms']:>8.3f} {row['loadtest_p50_ms']:>8.3f} {row['p50_diff_pct']:>+6.1f} "
        f"{row['loadtest_p50_wrk_style_ms']:>8.3f} {row['p50_wrk_style_diff_pct']:>+6.1f} | "
        f"{row['wrk_p99_ms']:>8.3f} {row['loadtest_p99_ms']:>8.3f} | "
        f"{row['wrk_req_per_cpu_s']:>13,.0f} {row['loadtest_req_per_cpu_s']:>12,.0f}"
    )


if __name__ == "__main__":
    main()
