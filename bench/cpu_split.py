"""Where the server's core goes under overload, thread by thread (not CI).

A real `mlserve serve` over the bundled sample, pinned to core 0 (wrk on core 1), driven by wrk
in a closed loop at the sustainable concurrency (32 connections for batches, 64 for single
texts), then at --overload connections (2,000), alternating, --rounds times, --seconds each.
For each phase, from /proc: every server thread's CPU and its run-queue wait (time runnable but
not running: /proc/PID/task/TID/schedstat), as fractions of the phase's wall time, and core 0's
user / nice / system / softirq / idle (/proc/stat). The event loop is the main thread; the
model thread is the busiest of the others (the thread starting model calls).

`--loop-nice N` lowers the event loop's priority by N nice steps once the model thread is
running (it keeps its own): the experiment of docs/benchmarks.md, "Ninth pass". `--open`
adds an open loop at 10x the sustainable rate (bench/openloop.c) after the rounds.

Usage: python bench/cpu_split.py [--endpoint batch|predict] [--rounds 2] [--seconds 10]
         [--loop-nice 0] [--open] [--src DIR] [--tag NAME]
Results: a line per phase on stdout and bench/out/cpu-split-<endpoint><tag>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from overload import CC, PROBE_TEXT, openloop_c, wrk_closed
from run import OUT, WRK, serve_sample, wait_http

CORE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def core0() -> dict[str, int]:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu0 "):
                return dict(zip(CORE_FIELDS, map(int, line.split()[1:9]), strict=True))
    raise SystemExit("no cpu0 in /proc/stat")


def schedstat(pid: int, tid: int) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable but waiting for one."""
    with contextlib.suppress(OSError):
        on_cpu, waiting, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    return 0.0, 0.0


def snapshot(proc: psutil.Process) -> tuple[dict[int, tuple[float, float]], dict[str, int], float]:
    threads = {t.id: schedstat(proc.pid, t.id) for t in proc.threads()}
    return threads, core0(), time.monotonic()


def split(before: Any, after: Any, pid: int) -> dict[str, Any]:
    threads0, core_0, t0 = before
    threads1, core_1, t1 = after
    wall = t1 - t0
    per: dict[int, tuple[float, float]] = {}
    for tid, (cpu, wait) in threads1.items():
        cpu0, wait0 = threads0.get(tid, (0.0, 0.0))
        per[tid] = (round((cpu - cpu0) / wall, 3), round((wait - wait0) / wall, 3))
    loop = per.pop(pid, (0.0, 0.0))
    others = sorted(per.values(), key=lambda v: -v[0])
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "event_loop": {"cpu": loop[0], "runqueue_wait": loop[1]},
        "model_thread": {"cpu": others[0][0], "runqueue_wait": others[0][1]} if others else None,
        "other_threads_cpu": round(sum(v[0] for v in others[1:]), 3),
        "core0": {k: round((core_1[k] - core_0[k]) / hz / wall, 3) for k in CORE_FIELDS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", choices=["batch", "predict"], default="batch")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--overload", type=int, default=2000, help="closed-loop connections")
    parser.add_argument("--loop-nice", type=int, default=0, help="nice steps for the loop")
    parser.add_argument("--open", action="store_true", help="then an open loop at 10x")
    parser.add_argument("--src", type=Path, default=None, help="serve the mlserve in DIR")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if WRK is None:
        raise SystemExit("needs wrk (apt-get install wrk)")

    home = Path(tempfile.mkdtemp(prefix="mlserve-cpu-split-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["MLSERVE_HOME"] = str(home)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    if args.endpoint == "batch":
        path, body, base = "/api/predict/batch", {"texts": [PROBE_TEXT] * args.batch_size}, 32
    else:
        path, body, base = "/api/predict", {"text": PROBE_TEXT}, 64
    server, url = serve_sample(home, env)
    phases: list[dict[str, Any]] = []
    try:
        wait_http(url + "/api/ready")  # 503 until the model is loaded
        proc = psutil.Process(server.pid)
        proc = next(iter(proc.children(recursive=True)), proc)
        sustainable = wrk_closed(url, path, body, base, 3)["throughput"]  # warm-up
        if args.loop_nice:
            # The model thread exists now (the warm-up started it) and keeps its priority.
            os.setpriority(os.PRIO_PROCESS, proc.pid, args.loop_nice)
        shapes = [("closed", c) for _ in range(args.rounds) for c in (base, args.overload)]
        for kind, connections in shapes:
            before = snapshot(proc)
            report = wrk_closed(url, path, body, connections, args.seconds)
            phase = split(before, snapshot(proc), proc.pid)
            if connections == base:
                sustainable = report["throughput"]
            phase.update(
                kind=kind,
                connections=connections,
                ok_rps=round(report["throughput"], 1),
                status_codes=report["status_codes"],
                latencies_ms=report["latencies"],
            )
            phases.append(phase)
            print(json.dumps(phase), flush=True)
        if args.open and CC is not None:
            before = snapshot(proc)
            report = openloop_c(url, path, body, sustainable * 10, args.seconds, 4000, 30.0)
            phase = split(before, snapshot(proc), proc.pid)
            phase.update(
                kind="open",
                offered_rps=round(sustainable * 10),
                ok_rps=round(report["throughput"], 1),
                status_codes=report["status_codes"],
                latencies_ms=report["latencies"],
                schedule=report.get("schedule"),
            )
            phases.append(phase)
            print(json.dumps(phase), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(home, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    out = OUT / f"cpu-split-{args.endpoint}{args.tag}.json"
    out.write_text(json.dumps({"loop_nice": args.loop_nice, "phases": phases}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
