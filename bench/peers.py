"""Peers side by side (issue 20): mlserve against MLServer and BentoML, same file, same text.

Usage: python bench/run.py --peers [--models sample,heavy] [--duration 8] [--src DIR]
   or: python bench/peers.py [same options]

For each model (`sample`: the bundled sentiment model as `mlserve train --sample sentiment`
writes it; `heavy`: TF-IDF with bigrams, ~29k terms, from bench/heavy_model.py) one joblib file
is written and every server below serves that same file, one at a time, pinned to core 0 with
wrk on core 1 (as in bench/run.py), and gets the same one English sentence per request:

- mlserve with its defaults (`--model-path`, nothing else set: batching, feedback recording and
  the access log on), and the same with the access log off (what bench/run.py's main table runs);
- MLServer (`mlserver` + `mlserver-sklearn`) with adaptive batching on (`max_batch_size` 64,
  `max_batch_time` 5 ms in model-settings.json; `predict_fn` = `predict_proba`, so it computes
  what mlserve computes) and its other defaults (one parallel inference worker process);
- BentoML with a batchable API (`bench/apps/bentoml_service.py`, `max_batch_size` 64);
- the bare-FastAPI ceiling (`bench/apps/bare_fastapi.py`: fixed JSON, no model).

The peers run from throwaway virtualenvs (`peer-mlserver`, `peer-bentoml` in $BENCH_PEER_VENVS,
default the temp folder), created with pip when missing. A peer that cannot be installed or
started is recorded with the reason, never with a number. Every server is checked with one
request before it is measured, and that answer is kept in the JSON. Results: bench/out/peers-<model>.json; the markdown block between
the `peers` markers in docs/benchmarks.md is rebuilt from every peers-*.json present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heavy_model  # noqa: E402
from run import OUT, PY, ROOT, WRK, Server, free_port, run_wrk  # noqa: E402

TEXT = "The staff were friendly and the room was spotless."
VENV_ROOT = Path(os.environ.get("BENCH_PEER_VENVS", tempfile.gettempdir()))
VENVS = {
    # uvloop 0.23 raises in MLServer 1.7's inference worker (`asyncio.get_event_loop()` with no
    # loop set): every worker dies at start and the model never loads. 0.21 is what it ran with.
    "MLServer": (VENV_ROOT / "peer-mlserver", ["mlserver", "mlserver-sklearn", "uvloop==0.21.0"]),
    "BentoML": (VENV_ROOT / "peer-bentoml", ["bentoml", "scikit-learn"]),
}
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.005}
MARK_START, MARK_END = (
    "<!-- bench/peers.py results: start -->",
    "<!-- bench/peers.py results: end -->",
)


@dataclass
class Spec:
    name: str
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    ready: str = ""  # a path that answers 200 once the model is loaded
    path: str = ""  # the prediction path
    body: dict[str, Any] = field(default_factory=dict)
    unavailable: str = ""  # why this server could not be run (then nothing else is set)


def ensure_venv(name: str) -> tuple[Path | None, str]:
    """The peer's virtualenv, created with pip if missing; or None and the reason."""
    venv, packages = VENVS[name]
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run(["python3", "-m", "venv", str(venv)], capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        if made.returncode:
            return None, f"python3 -m venv {venv} failed: {made.stderr.strip()[-300:]}"
    probe = ("import importlib.metadata as m, sys\nfor p in sys.argv[1:]:\n"
             "    name, _, want = p.partition('==')\n    assert want in ('', m.version(name))")  # fmt: skip
    have = subprocess.run([str(python), "-c", probe, *packages], capture_output=True, timeout=60,
                          check=False)  # fmt: skip
    if have.returncode:
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages],
                             capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
        if pip.returncode:
            lines = [ln for ln in pip.stderr.splitlines() if not ln.startswith("WARNING")]
            return None, f"pip install {' '.join(packages)} failed: {' '.join(lines)[-400:]}"
    return venv, ""


def peer_versions(venv: Path, packages: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))")  # fmt: skip
    names = [p.split("==")[0] for p in packages]
    res = subprocess.run([str(venv / "bin" / "python"), "-c", code, *names, "scikit-learn"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return json.loads(res.stdout) if res.returncode == 0 else {}


def peer_env(venv: Path, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["BENTOML_HOME"] = str(work / "bentoml-home")
    env["BENTOML_DO_NOT_TRACK"] = "True"
    return env


def mlserve_env(src: Path | None) -> tuple[list[str], dict[str, str]]:
    """How to run `python -m mlserve`: this checkout, or the package in `src` (an export of a
    commit, so others' uncommitted edits in a shared checkout are not what gets measured).
    `-P` keeps the working directory off sys.path, so PYTHONPATH wins over the editable install."""
    if src is None:
        return [PY, "-m", "mlserve"], dict(os.environ)
    return [PY, "-P", "-m", "mlserve"], {**os.environ, "PYTHONPATH": str(src.resolve())}


def specs(
    model_path: Path, work: Path, versions: dict[str, dict[str, str]], src: Path | None
) -> list[Spec]:
    prefix, env = mlserve_env(src)
    base_env = {**env, "MLSERVE_HOME": str(work / "mlserve-home"), "BENCH_MODEL": str(model_path)}
    out: list[Spec] = []
    port = free_port()
    mlserve_cmd = [*prefix, "serve", "--model-path", f"bench={model_path}",
                   "--port", str(port)]  # fmt: skip
    out.append(Spec("mlserve (defaults)", mlserve_cmd, base_env, port, "/api/ready",
                    "/api/predict", {"text": TEXT}))  # fmt: skip
    port = free_port()
    quiet = {**base_env, "MLSERVE_LOGGING__ACCESS_LOG": "false"}
    out.append(Spec("mlserve (access log off)", [*mlserve_cmd[:-1], str(port)], quiet, port,
                    "/api/ready", "/api/predict", {"text": TEXT}))  # fmt: skip

    venv, why = ensure_venv("MLServer")
    if venv is None:
        out.append(Spec("MLServer (adaptive batching)", unavailable=why))
    else:
        versions["MLServer"] = peer_versions(venv, VENVS["MLServer"][1])
        folder = work / "mlserver"
        folder.mkdir(exist_ok=True)
        port = free_port()
        settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
                    "metrics_port": free_port()}  # fmt: skip
        model = {"name": "model", "implementation": "mlserver_sklearn.SKLearnModel",
                 "parameters": {"uri": str(model_path), "extra": {"predict_fn": "predict_proba"}},
                 **MLSERVER_BATCH}  # fmt: skip
        (folder / "settings.json").write_text(json.dumps(settings))
        (folder / "model-settings.json").write_text(json.dumps(model))
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
        out.append(Spec("MLServer (adaptive batching)",
                        [str(venv / "bin" / "mlserver"), "start", str(folder)],
                        peer_env(venv, work), port, "/v2/models/model/ready",
                        "/v2/models/model/infer", body))  # fmt: skip

    venv, why = ensure_venv("BentoML")
    if venv is None:
        out.append(Spec("BentoML (batchable API)", unavailable=why))
    else:
        versions["BentoML"] = peer_versions(venv, VENVS["BentoML"][1])
        port = free_port()
        cmd = [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Classifier",
               "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(HERE / "apps")]  # fmt: skip
        env = {**peer_env(venv, work), "BENCH_MODEL": str(model_path)}
        out.append(Spec("BentoML (batchable API)", cmd, env, port, "/readyz", "/predict",
                        {"texts": [TEXT]}))  # fmt: skip

    port = free_port()
    cmd = [PY, "-m", "uvicorn", "bare_fastapi:app", "--port", str(port), "--no-access-log",
           "--log-level", "warning", "--app-dir", str(HERE / "apps")]  # fmt: skip
    out.append(Spec("bare FastAPI (no model)", cmd, base_env, port, "/docs", "/api/predict",
                    {"text": TEXT}))  # fmt: skip
    return out


def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 120.0) -> str:
    """'' once `url` answers 200; else why not (the process exited, or the deadline passed)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before it was ready"
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return ""
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return f"not ready after {deadline_s:.0f} s"


def tree_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return round(
        sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1
    )


def measure(spec: Spec, work: Path, duration: int) -> dict[str, Any]:
    if spec.unavailable:
        return {"unavailable": spec.unavailable}
    slug = "peer-" + re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")
    script = work / f"{slug}.lua"
    body = json.dumps(spec.body).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = '{body}'\n")  # fmt: skip
    server = Server(slug, spec.cmd, spec.env, spec.port, spec.ready)  # pinned to core 0
    base = f"http://127.0.0.1:{spec.port}"
    try:
        why = wait_ready(base + spec.ready, server.proc)
        if why:
            tail = (OUT / f"{slug}.log").read_text(errors="replace").strip().splitlines()[-3:]
            return {"unavailable": f"did not start: {why}; log: {' | '.join(tail)[-400:]}"}
        check = httpx.post(base + spec.path, json=spec.body, timeout=30.0)
        row: dict[str, Any] = {"check": {"status": check.status_code, "body": check.text[:400]}}
        if check.status_code != 200:
            return {**row, "unavailable": f"the check request answered {check.status_code}"}
        url = base + spec.path
        run_wrk(url, script, 8, 2)  # warm-up
        # c=1 before and after c=64: an adaptive batcher that tunes its wait under load (BentoML's)
        # keeps that wait for the quiet client afterwards
        row["wrk_c1"] = run_wrk(url, script, 1, duration)
        row["wrk_c64"] = run_wrk(url, script, 64, duration)
        row["wrk_c1_after"] = run_wrk(url, script, 1, duration)
        row["rss_mb"] = tree_rss_mb(server.proc.pid)
        return row
    finally:
        server.__exit__(None, None, None)


def run_model(model: str, duration: int, src: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"mlserve-peers-{model}-"))
    try:
        model_path = work / f"{model}.joblib"
        info: dict[str, Any]
        if model == "sample":
            prefix, env = mlserve_env(src)
            subprocess.run([*prefix, "train", "--sample", "sentiment", "--output",
                            str(model_path), "--json"], check=True, stdout=subprocess.DEVNULL,
                           env={**env, "MLSERVE_HOME": str(work / "train-home")})  # fmt: skip
            info = {"what": "bundled sentiment sample (mlserve train --sample sentiment)",
                    "bytes": model_path.stat().st_size}  # fmt: skip
        else:
            info = {"what": "TF-IDF bigrams + logistic regression (bench/heavy_model.py)",
                    **heavy_model.train(model_path)}  # fmt: skip
            info.pop("path", None)
        versions: dict[str, dict[str, str]] = {}
        load_before = os.getloadavg()
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        servers: dict[str, Any] = {}
        for spec in specs(model_path, work, versions, src):
            servers[spec.name] = measure(spec, work, duration)
            print(f"done: {model} / {spec.name}", file=sys.stderr)  # noqa: T201
        return {
            "model": model,
            "mlserve_src": str(src) if src else "this checkout (working tree)",
            "model_info": info,
            "started": started,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "duration_s": duration,
            "text": TEXT,
            "mlserver_batching": MLSERVER_BATCH,
            "python": platform.python_version(),
            "peer_versions": versions,
            "servers": servers,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for res in results:
        info = res["model_info"]
        size = f"{info['bytes'] / 1e6:.2f} MB"
        vocab = f", {info['vocabulary']:,}-term vocabulary" if "vocabulary" in info else ""
        out += [f"**{res['model']}**: {info['what']}{vocab}, {size}. Run {res['started']}, "
                f"load average before/after {res['loadavg_before'][0]} / "
                f"{res['loadavg_after'][0]} (1 min), {res['duration_s']} s per wrk run; mlserve from "
                f"{res.get('mlserve_src', 'this checkout')}.", "",
                "| server | req/s c=64 | p99 c=64 ms | p50 c=1 ms | p50 c=1 after c=64 ms "
                "| errors | RSS MB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in res["servers"].items():
            if "unavailable" in row:
                out.append(f"| {name} | not measured: {row['unavailable']} | | | | | |")
                continue
            r64, r1, after = row["wrk_c64"], row["wrk_c1"], row.get("wrk_c1_after", {})
            errors = int(r64["errors"] + r1["errors"] + after.get("errors", 0))
            out.append(f"| {name} | {r64['rps']:,.0f} | {r64['p99_ms']:.1f} | {r1['p50_ms']:.2f} "
                       f"| {after.get('p50_ms', float('nan')):.2f} | {errors} | {row['rss_mb']} |")  # fmt: skip
        ml = res["servers"].get("mlserve (defaults)", {})
        for peer in ("MLServer (adaptive batching)", "BentoML (batchable API)"):
            other = res["servers"].get(peer, {})
            if "wrk_c64" not in ml or "wrk_c64" not in other:
                continue
            out.append("")
            out.append(
                f"mlserve (defaults) / {peer.split(' ')[0]}: "
                f"{ml['wrk_c64']['rps'] / other['wrk_c64']['rps']:.1f}× the req/s at c=64; "
                f"p99 at c=64 {ml['wrk_c64']['p99_ms'] / other['wrk_c64']['p99_ms']:.2f}× theirs; "
                f"p50 at c=1 {ml['wrk_c1']['p50_ms'] / other['wrk_c1']['p50_ms']:.2f}× theirs."
            )
        out.append("")
    print("\n".join(out))  # noqa: T201
    return out


def write_markdown(lines: list[str]) -> None:
    target = ROOT / "docs" / "benchmarks.md"
    text = target.read_text(encoding="utf-8")
    if MARK_START not in text or MARK_END not in text:
        print(f"(no peers markers in {target}: not written)", file=sys.stderr)  # noqa: T201
        return
    head, rest = text.split(MARK_START, 1)
    tail = rest.split(MARK_END, 1)[1]
    block = "\n".join([MARK_START, "", *lines, MARK_END])
    target.write_text(head + block + tail, encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)  # noqa: T201


def plot(results: list[dict[str, Any]]) -> None:
    """docs/benchmarks-peers.png: req/s and p99 at c=64, per server and model (bars)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)", file=sys.stderr)  # noqa: T201
        return
    names = list(results[0]["servers"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    width = 0.8 / len(results)
    metrics = [("wrk_c64", "rps", "req/s at c=64", "linear"),
               ("wrk_c64", "p99_ms", "p99 at c=64 (ms)", "log"),
               ("wrk_c1", "p50_ms", "p50 at c=1 (ms)", "log")]  # fmt: skip
    for ax, (run, key, title, scale) in zip(axes, metrics, strict=True):
        for i, res in enumerate(results):
            values = [res["servers"].get(n, {}).get(run, {}).get(key, 0.0) for n in names]
            xs = [j + i * width for j in range(len(names))]
            ax.bar(xs, values, width, label=f"{res['model']} model")
        ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(names))])
        short = [n.replace("adaptive batching", "batching").replace("batchable API", "batchable")
                 .replace("access log off", "log off").replace(" (", "\n(") for n in names]  # fmt: skip
        ax.set_xticklabels(short, fontsize=7)
        ax.set(title=title, yscale=scale)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("Peers side by side (server on core 0, wrk on core 1; missing bar: not measured)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    target = ROOT / "docs" / "benchmarks-peers.png"
    fig.savefig(target, dpi=100)
    print(f"plot: {target}", file=sys.stderr)  # noqa: T201


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sample,heavy", help="sample and/or heavy")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--src", type=Path, default=None, help="serve the mlserve in DIR")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if not WRK:
        sys.exit("wrk is required (apt-get install wrk)")
    OUT.mkdir(exist_ok=True)
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        res = run_model(model, args.duration, args.src)
        (OUT / f"peers-{model}.json").write_text(json.dumps(res, indent=2))
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("peers-*.json"))]
    results.sort(key=lambda r: r["model"] != "sample")
    lines = report(results)
    if not args.no_docs:
        write_markdown(lines)
        plot(results)


if __name__ == "__main__":
    main()
