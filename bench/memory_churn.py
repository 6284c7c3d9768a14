"""Memory under model churn, in process (not CI): where a budgeted server's RSS goes.

One ModelManager (no HTTP) over a registry of --models small decision trees, with
server.max_loaded (--max-loaded) or memory_budget_mb (--budget-mb), answers a Zipf(--zipf)
sequence of --requests one-row predictions through each runtime's batcher: ~40 % of them load
a model and unload another. Every --every requests it records the process RSS (psutil), glibc's
malloc statistics (mallinfo2: bytes in use and free inside the heap), the live threads and the
live LoadedModel / Batcher objects; at the end, how long each heap trim took (not with --app)
and, with --tracemalloc, the Python allocations that grew between the end of the warm-up (one
pass over every model) and the end of the run, by line.
With --app the requests go through the whole app (a TestClient: routes, prediction service,
traffic, metrics) instead of straight to the batchers. tracemalloc's own bookkeeping inflates
the RSS several times over: compare RSS only between runs without --tracemalloc.

Usage: python bench/memory_churn.py [--rows 20000] [--models 200] [--budget-mb 25]
         [--registry DIR (kept, reused)] [--tracemalloc] [--app] [--out memory-churn.json]
Results: a summary on stdout and bench/out/<--out>.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil
from many_models import build_registry, zipf_sequence
from run import OUT


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def mallinfo() -> dict[str, float] | None:
    """glibc's heap figures in MB (None elsewhere): arena = heap obtained with brk/mmap'd
    arenas, hblkhd = large blocks mmap'd on their own, uordblks = in use, fordblks = free
    but kept by the process."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    keys = ("arena", "hblkhd", "uordblks", "fordblks")
    return {key: round(getattr(info, key) / 2**20, 1) for key in keys}


def live(type_name: str) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ == type_name)


def sample(label: str, done: int) -> dict[str, Any]:
    gc.collect()
    row: dict[str, Any] = {
        "at": label,
        "requests": done,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "threads": threading.active_count(),
        "loaded_models": live("LoadedModel"),
        "batchers": live("Batcher"),
    }
    row["malloc"] = mallinfo()
    if tracemalloc.is_tracing():
        row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
    print(json.dumps(row), flush=True)
    return row


async def churn(args: argparse.Namespace, registry_root: Path) -> dict[str, Any]:
    from mlserve.config import load_settings
    from mlserve.registry import Registry
    from mlserve.runtime.heap import malloc_trim
    from mlserve.serving.manager import ModelManager
    from mlserve.serving.metrics import ServerMetrics

    server: dict[str, Any] = {}
    if args.max_loaded:
        server["max_loaded"] = args.max_loaded
    if args.budget_mb:
        server["memory_budget_mb"] = args.budget_mb
    settings = load_settings(
        None, home=str(registry_root.parent / "home"), registry={"path": str(registry_root)},
        server=server,
    )  # fmt: skip
    trims: list[float] = []  # ms of each heap trim
    real_trim = malloc_trim()

    def timed_trim() -> None:
        started = time.perf_counter()
        if real_trim is not None:
            real_trim()
        trims.append((time.perf_counter() - started) * 1000)

    manager = ModelManager(settings, Registry(registry_root), ServerMetrics(), trim=timed_trim)
    features = [0.1] * args.features
    samples: list[dict[str, Any]] = []
    sequence = zipf_sequence(args.models, args.requests, args.zipf, args.seed)
    warmup = list(range(args.models))  # every model once: every per-model object exists
    await manager.load_all()
    samples.append(sample("ready", 0))

    async def ask(index: int) -> None:
        runtime = await manager.get(f"m{index:03d}")
        row = runtime.model.prepare(text=None, features=features)
        await runtime.batcher.submit(row)

    started = time.perf_counter()
    for index in warmup:
        await ask(index)
    await asyncio.sleep(1.0)  # the unloaded ones drain (EVICT_GRACE_S)
    samples.append(sample("warm", 0))
    before = tracemalloc.take_snapshot() if args.tracemalloc else None
    for done, index in enumerate(sequence, 1):
        await ask(index)
        if done % args.every == 0:
            samples.append(sample("run", done))
    await asyncio.sleep(1.0)
    samples.append(sample("end", len(sequence)))
    elapsed = time.perf_counter() - started
    grown = compare(before)
    loads = sum(
        s.value
        for metric in manager.metrics.model_loads.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    )
    await manager.close()
    ordered = sorted(trims)
    trim_ms = {
        "count": len(trims),
        "p50": round(ordered[len(trims) // 2], 2) if trims else None,
        "max": round(ordered[-1], 2) if trims else None,
    }
    print(f"heap trims: {trim_ms}")
    return {
        "samples": samples,
        "grown": grown,
        "loads": loads,
        "seconds": round(elapsed, 1),
        "trim_ms": trim_ms,
    }


def churn_app(args: argparse.Namespace, registry_root: Path) -> dict[str, Any]:
    """The same through the whole app (routes, prediction service, traffic, metrics) driven by
    a TestClient: what the HTTP path keeps per model, next to the manager's."""
    from fastapi.testclient import TestClient

    from mlserve.config import load_settings
    from mlserve.server.app import create_app

    server: dict[str, Any] = {}
    if args.max_loaded:
        server["max_loaded"] = args.max_loaded
    if args.budget_mb:
        server["memory_budget_mb"] = args.budget_mb
    settings = load_settings(
        None, home=str(registry_root.parent / "home"), registry={"path": str(registry_root)},
        server=server, logging={"access_log": False}, feedback={"enabled": False},
    )  # fmt: skip
    features = [0.1] * args.features
    samples: list[dict[str, Any]] = []
    sequence = zipf_sequence(args.models, args.requests, args.zipf, args.seed)
    with TestClient(create_app(settings)) as client:
        samples.append(sample("ready", 0))
        started = time.perf_counter()
        for index in range(args.models):
            client.post("/api/predict", json={"model": f"m{index:03d}", "features": features})
        time.sleep(1.0)
        samples.append(sample("warm", 0))
        before = tracemalloc.take_snapshot() if args.tracemalloc else None
        for done, index in enumerate(sequence, 1):
            body = {"model": f"m{index:03d}", "features": features}
            assert client.post("/api/predict", json=body).status_code == 200
            if done % args.every == 0:
                samples.append(sample("run", done))
        time.sleep(1.0)
        samples.append(sample("end", len(sequence)))
        elapsed = time.perf_counter() - started
        grown = compare(before)
        loads = sum(
            float(line.split()[-1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("mlserve_model_loads_total{")
        )
    return {"samples": samples, "grown": grown, "loads": loads, "seconds": round(elapsed, 1)}


def compare(before: tracemalloc.Snapshot | None) -> list[dict[str, Any]]:
    """The allocations that grew most since `before`, by traceback (printed too)."""
    grown: list[dict[str, Any]] = []
    if before is None:
        return grown
    after = tracemalloc.take_snapshot()
    for stat in after.compare_to(before, "traceback")[:15]:
        frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback]
        grown.append({"kib": round(stat.size_diff / 1024, 1), "count": stat.count_diff,
                      "where": frames[-6:]})  # fmt: skip
        print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d}  {frames[-1]}")
    return grown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000, help="training rows per model")
    parser.add_argument("--max-loaded", type=int, default=0)
    parser.add_argument("--budget-mb", type=float, default=25.0)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--zipf", type=float, default=1.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--registry", type=Path, help="registry to reuse (built when missing)")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    parser.add_argument("--app", action="store_true", help="through the app (TestClient)")
    parser.add_argument("--out", default="memory-churn.json", help="file name in bench/out/")
    args = parser.parse_args()

    cached = Path(tempfile.gettempdir()) / f"mlserve-churn-{args.models}x{args.rows}" / "registry"
    root = args.registry or cached
    if not root.exists():
        print(f"registering {args.models} models in {root} ...", flush=True)
        build_registry(root, args.models, args.features, args.rows, "tree", args.seed)
    if args.tracemalloc:
        tracemalloc.start(25)
    result = churn_app(args, root) if args.app else asyncio.run(churn(args, root))
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "python": sys.version.split()[0],
        "env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        **result,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"loads {result['loads']:.0f} in {result['seconds']} s; wrote {OUT / args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
