"""Workers (issue 20): `mlserve serve --workers 1` against `--workers 2`, and memory per worker.

Usage: python bench/workers.py [--models sample,heavy,forest] [--duration 8] [--rounds 2]
                               [--source registry|files] [--src DIR]
       python bench/workers.py --probe [--models sample,heavy]
       python bench/workers.py --report   (markdown tables from the JSON in bench/out)

Models: sample (the bundled sentiment model), heavy (bench/heavy_model.py: TF-IDF with ~29k
terms + logistic regression), forest (TF-IDF + a 100-tree random forest, ~78 MB as joblib: a
model whose bulk is numpy arrays; fitted once, minutes, and kept in bench/out).

Load run: the server is not pinned (its workers share the 2 cores with wrk, a third process,
`wrk -t1`), defaults otherwise, serving the model from a registry (`--source files`: with
`--model-path`). After a warm-up, wrk at 64 connections for --duration seconds; then RSS and
PSS (/proc/PID/smaps_rollup) of the supervisor and of each worker, read while the server is
still up. `--src DIR` measures the mlserve in DIR (an export of a commit): before commit
e4ee8f1 uvicorn's supervisor spawns the workers, each importing and loading on its own; from
it, on Linux, mlserve's supervisor imports the app and reads the models, then forks them.
Results: bench/out/workers-load-<source>.json.

--probe (no HTTP): what loading the model in worker processes costs in PSS, four ways, each
with 2 "workers" that import what an mlserve worker imports (mlserve.server.app), load the model
and score 200 texts, then hold still while their PSS is read:
  spawn        each worker imports and loads on its own (uvicorn's spawned workers)
  spawn+mmap   the same, with joblib.load(path, mmap_mode="r"): numpy arrays memory-mapped
               from the file, shared through the page cache
  fork         the parent imports and loads, then forks the workers (copy-on-write)
  fork+freeze  the same with gc.freeze() before the fork (the collector then leaves the
               inherited objects' headers alone, so fewer pages are copied)
Total PSS over every process (parent included) is the memory the arrangement really uses.
Results: bench/out/workers-probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heavy_model  # noqa: E402
from peers import TEXT, mlserve_env, wait_ready  # noqa: E402
from run import OUT, WRK, free_port, parse_wrk  # noqa: E402

FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty", "Private_Clean")


def smaps(pid: int) -> dict[str, float]:
    """Memory figures of one process in MB, from /proc/PID/smaps_rollup."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def train_forest(path: Path) -> None:
    """A big model whose bulk is numpy arrays: TF-IDF (the heavy model's corpus and
    vocabulary) + a 100-tree random forest, ~78 MB as joblib. Kept in bench/out (deterministic:
    seeded), as it takes minutes to fit."""
    import shutil

    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    cached = OUT / f"forest-sklearn{sklearn.__version__}.joblib"
    if not cached.exists():
        texts, labels = heavy_model.corpus()
        model = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                          ("clf", RandomForestClassifier(n_estimators=100, random_state=20))])  # fmt: skip
        model.fit(texts, labels)
        joblib.dump(model, cached)
    shutil.copyfile(cached, path)


def make_model(which: str, work: Path, src: Path | None) -> Path:
    path = work / f"{which}.joblib"
    if which == "heavy":
        heavy_model.train(path)
    elif which == "forest":
        train_forest(path)
    else:
        prefix, env = mlserve_env(src)
        subprocess.run([*prefix, "train", "--sample", "sentiment", "--output", str(path),
                        "--json"], check=True, stdout=subprocess.DEVNULL,
                       env={**env, "MLSERVE_HOME": str(work / "train-home")})  # fmt: skip
    return path


def workers_of(pid: int) -> tuple[psutil.Process, list[psutil.Process]]:
    parent = psutil.Process(pid)
    kids = [
        p
        for p in parent.children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline())
    ]
    return parent, kids


def load_run(
    model_path: Path, work: Path, workers: int, duration: int, src: Path | None, source: str
) -> dict:
    prefix, env = mlserve_env(src)
    port = free_port()
    home = work / f"home-{workers}-{source}"
    env = {**env, "MLSERVE_HOME": str(home)}
    if source == "files":
        what = ["--model-path", f"bench={model_path}"]
    else:  # the registry: the supervisor only checks it, the workers load the model
        if not (home / "registry").exists():
            subprocess.run([*prefix, "register", str(model_path), "--name", "bench", "--alias",
                            "production"], env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        what = ["--no-sample"]
    cmd = [*prefix, "serve", "--workers", str(workers), *what, "--port", str(port)]
    log = open(OUT / f"workers-{workers}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    script = work / "predict.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = '{json.dumps({'text': TEXT})}'\n")  # fmt: skip
    try:
        why = wait_ready(base + "/api/ready", proc)
        if why:
            return {"unavailable": why}
        # every worker must be up, not just the first to answer
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers_of(proc.pid)[1]) < workers:
            time.sleep(0.3)
        for _ in range(20):
            httpx.post(base + "/api/predict", json={"text": TEXT}, timeout=10).raise_for_status()
        parent, kids = workers_of(proc.pid)
        idle = {"supervisor": smaps(parent.pid), "workers": [smaps(k.pid) for k in kids]}
        wrk = [WRK, "-t1", "-c64", f"-d{duration}s", "--latency", "-s", str(script),
               base + "/api/predict"]  # fmt: skip
        subprocess.run([*wrk[:3], "-d2s", *wrk[4:]], capture_output=True, timeout=40, check=False)
        res = subprocess.run(
            wrk, capture_output=True, text=True, timeout=duration + 30, check=False
        )
        loaded = {"supervisor": smaps(parent.pid), "workers": [smaps(k.pid) for k in kids]}
        return {
            "workers": workers,
            "worker_pids": [k.pid for k in kids],
            "wrk_c64": parse_wrk(res.stdout),
            "memory_idle": idle,
            "memory_after_load": loaded,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


SKLEARN = "import sklearn.pipeline, sklearn.feature_extraction.text, sklearn.linear_model"
PROBE_CHILD = textwrap.dedent(
    """
    import gc, json, os, sys, time
    mode, path, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    import joblib
    import mlserve.server.app  # what an mlserve worker imports (FastAPI, starlette, sklearn...)

    def load():
        if mode.endswith("mmap"):
            return joblib.load(path, mmap_mode="r")
        return joblib.load(path)

    def work(model):
        for i in range(0, len(texts), 8):
            model.predict_proba(texts[i:i + 8])

    def hold():
        print("ready", flush=True)
        sys.stdin.readline()

    if mode.startswith("spawn"):
        model = load()
        work(model)
        hold()
    else:
        model = load()
        work(model)
        if mode == "fork+freeze":
            gc.collect()
            gc.freeze()
        kids = []
        for _ in range(int(sys.argv[4])):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                work(model)
                gc.collect()
                os.write(w, b"x")
                os.read(0, 1)  # parent's stdin: EOF ends the child
                os._exit(0)
            os.close(w)
            os.read(r, 1)
            kids.append(pid)
        print(json.dumps(kids), flush=True)
        sys.stdin.readline()
        for pid in kids:
            os.waitpid(pid, 0)
    """
)


def array_bytes(model_path: Path) -> dict[str, Any]:
    """What in the model is a numpy array (mmap-able) and what is not, and whether mmap took."""
    code = textwrap.dedent(
        f"""
        import json, pickle, joblib, numpy as np
        m = joblib.load({str(model_path)!r}, mmap_mode="r")
        arrays, mapped = [], 0
        def walk(obj, seen):
            if id(obj) in seen: return
            seen.add(id(obj))
            if isinstance(obj, np.ndarray):
                arrays.append(obj.nbytes)
                global mapped
                mapped += obj.nbytes if isinstance(obj, np.memmap) else 0
                return
            if isinstance(obj, dict): vals = obj.values()
            elif isinstance(obj, (list, tuple)): vals = obj
            elif hasattr(obj, "__dict__"): vals = vars(obj).values()
            else: return
            for v in vals: walk(v, seen)
        walk(m, set())
        vocab = m.named_steps["tfidf"].vocabulary_
        print(json.dumps({{"array_bytes": sum(arrays), "memmapped_bytes": mapped,
                          "vocabulary_terms": len(vocab),
                          "vocabulary_pickled_bytes": len(pickle.dumps(vocab))}}))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def probe(model_path: Path, texts: list[str], src: Path | None, workers: int = 2) -> dict[str, Any]:
    prefix, env = mlserve_env(src)
    py = prefix[:-2]  # the interpreter (and -P), without "-m mlserve"
    out: dict[str, Any] = {"model_bytes": model_path.stat().st_size, **array_bytes(model_path)}
    arg = json.dumps(texts)
    # the baseline: an interpreter that imported the same modules (the server's and what
    # unpickling the model imports), no model
    base = subprocess.Popen([*py, "-c", f"import mlserve.server.app, sys; {SKLEARN}; "
                             "print('ready', flush=True); sys.stdin.readline()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    assert base.stdout is not None and base.stdin is not None
    base.stdout.readline()
    out["imports_only"] = smaps(base.pid)
    base.stdin.close()
    base.wait(30)
    for mode in ("spawn", "spawn+mmap", "fork", "fork+freeze"):
        procs: list[subprocess.Popen[str]] = []
        pids: list[int] = []
        try:
            if mode.startswith("spawn"):
                for _ in range(workers):
                    p = subprocess.Popen([*py, "-c", PROBE_CHILD, mode, str(model_path), arg],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env=env)  # fmt: skip
                    procs.append(p)
                for p in procs:
                    assert p.stdout is not None
                    p.stdout.readline()
                    pids.append(p.pid)
                parent = None
            else:
                p = subprocess.Popen([*py, "-c", PROBE_CHILD, mode, str(model_path), arg,
                                      str(workers)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
                procs.append(p)
                assert p.stdout is not None
                pids = json.loads(p.stdout.readline())
                parent = smaps(p.pid)
            kids = [smaps(pid) for pid in pids]
            total = sum(k["pss_mb"] for k in kids) + (parent["pss_mb"] if parent else 0.0)
            out[mode] = {"workers": kids, "parent": parent, "total_pss_mb": round(total, 1)}
        finally:
            for p in procs:
                if p.stdin:
                    p.stdin.close()
                p.wait(60)
        print(f"probe: {mode}: total PSS {out[mode]['total_pss_mb']} MB", file=sys.stderr)  # noqa: T201
    return out


def report() -> list[str]:
    """Markdown tables from the JSON files in bench/out (for docs/benchmarks.md)."""
    out: list[str] = []
    for source in ("registry", "files"):
        path = OUT / f"workers-load-{source}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        out += [f"`--source {source}`, run {data['started']}, load average (1 min) before/after "
                f"{data['loadavg_before'][0]} / {data['loadavg_after'][0]}, "
                f"{data['duration_s']} s of wrk -t1 -c64 per run:", "",
                "| model | run | workers | req/s c=64 | p99 ms | supervisor RSS / PSS MB "
                "| each worker RSS / PSS / private dirty MB | total PSS MB |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for model, runs in data["models"].items():
            for key, row in runs.items():
                if "unavailable" in row:
                    out.append(f"| {model} | {key} | | not measured: {row['unavailable']} |||||")
                    continue
                mem = row["memory_after_load"]
                sup, kids = mem["supervisor"], mem["workers"]
                each = ", ".join(f"{k['rss_mb']} / {k['pss_mb']} / {k['private_dirty_mb']}"
                                 for k in kids) or "(serves in the supervisor)"  # fmt: skip
                total = sup["pss_mb"] + sum(k["pss_mb"] for k in kids)
                wrk = row["wrk_c64"]
                out.append(f"| {model} | {key.split('-')[0]} | {row['workers']} | "
                           f"{wrk['rps']:,.0f} | {wrk['p99_ms']:.1f} | {sup['rss_mb']} / "
                           f"{sup['pss_mb']} | {each} | {total:.1f} |")  # fmt: skip
        out.append("")
    path = OUT / "workers-probe.json"
    if path.exists():
        data = json.loads(path.read_text())
        out += [f"Probe, run {data['started']}, load average (1 min) {data['loadavg_before'][0]}:",
                "", "| model | arrays (mmap-able) | vocabulary (a dict, not mmap-able) | way | "
                "each worker RSS / PSS / private dirty MB | parent PSS MB | total PSS MB |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for model, res in data["models"].items():
            base = res["imports_only"]
            out.append(f"| {model} | {res['array_bytes'] / 1e6:.2f} MB | "
                       f"{res['vocabulary_terms']:,} terms ({res['vocabulary_pickled_bytes'] / 1e6:.2f}"
                       f" MB pickled) | imports only, no model | {base['rss_mb']} / {base['pss_mb']}"
                       f" / {base['private_dirty_mb']} | | |")  # fmt: skip
            for mode in ("spawn", "spawn+mmap", "fork", "fork+freeze"):
                row = res[mode]
                each = ", ".join(f"{k['rss_mb']} / {k['pss_mb']} / {k['private_dirty_mb']}"
                                 for k in row["workers"])  # fmt: skip
                parent = row["parent"]["pss_mb"] if row["parent"] else "-"
                out.append(f"| {model} | | | {mode} | {each} | {parent} | {row['total_pss_mb']} |")
        out.append("")
    print("\n".join(out))  # noqa: T201
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sample,heavy")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--src", type=Path, default=None, help="serve the mlserve in DIR")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of 1 and 2")
    parser.add_argument("--source", choices=("registry", "files"), default="registry",
                        help="serve from a registry (default) or with --model-path")  # fmt: skip
    parser.add_argument("--probe", action="store_true", help="the memory probe, no HTTP")
    parser.add_argument("--report", action="store_true", help="tables from bench/out, no run")
    args = parser.parse_args()
    if args.report:
        report()
        return
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlserve-workers-"))
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "mlserve_src": str(args.src) if args.src else "this checkout (working tree)",
        "source": args.source,
    }
    results: dict[str, Any] = {}
    import csv
    import importlib.resources

    with (importlib.resources.files("mlserve.samples") / "sentiment.csv").open(
        encoding="utf-8", newline=""
    ) as fh:
        texts = [row["text"] for row in csv.DictReader(fh)][:200]
    for which in [m.strip() for m in args.models.split(",") if m.strip()]:
        model_path = make_model(which, work, args.src)
        if args.probe:
            results[which] = probe(model_path, texts, args.src)
        else:
            # alternating rounds: a neighbour's burst hits both worker counts alike
            results[which] = {
                f"round{r}-{n}": load_run(model_path, work, n, args.duration, args.src, args.source)
                for r in range(1, args.rounds + 1)
                for n in (1, 2)
            }
        print(f"done: {which}", file=sys.stderr)  # noqa: T201
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    name = "workers-probe.json" if args.probe else f"workers-load-{args.source}.json"
    (OUT / name).write_text(json.dumps({**meta, "duration_s": args.duration, "models": results},
                                       indent=2))  # fmt: skip
    print(json.dumps(results, indent=1)[:6000])  # noqa: T201


if __name__ == "__main__":
    main()
