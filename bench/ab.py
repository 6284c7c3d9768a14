"""A/B: the working tree against an earlier commit, side by side, in alternating rounds.

Both servers run `mlserve serve` with default settings over the same registry (the bundled
sentiment sample, and the iris sample: a tabular model fitted on a float matrix), pinned to
core 0; wrk runs on core 1. Each round measures one text per request at 64 connections,
100-text batches at 8 connections and one iris row per request (`{"features": {...}, "model":
"iris"}`) at 64 connections, first for one side, then for the other (the order alternates),
so machine noise falls on both alike. The sides share the registry, not their state: each
server gets fresh feedback and job stores, and is checked to record feedback before measuring. Used to show a restructure or an optimisation kept (or
changed) the request path's speed.

    python bench/ab.py --base 165fc26 [--head REV] --rounds 4 --duration 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from run import HERE, OUT, PY, WRK, Server, free_port, run_wrk

ROOT = HERE.parent


def export_tree(rev: str, into: Path) -> Path:
    """The package as it was at `rev`, unpacked under `into` (run from there via PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "mlserve", "sample_models"],  # noqa: S607
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)  # noqa: S607
    # mlserve.samples is sample_models/ in an install; a source tree needs the link.
    (into / "mlserve" / "samples").symlink_to(into / "sample_models")
    return into


# One iris row per request, by feature name (the sample's names in both trees).
TABULAR_BODY = {
    "features": {
        "sepal_length": 5.1,
        "sepal_width": 3.5,
        "petal_length": 1.4,
        "petal_width": 0.2,
    },
    "model": "iris",
}


def tabular_script(into: Path) -> Path:
    """A wrk script POSTing TABULAR_BODY (written to the scratch directory)."""
    path = into / "predict_tabular.lua"
    body = json.dumps(TABULAR_BODY)
    path.write_text(
        "-- wrk script: POST one iris row per request to /api/predict.\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body}]==]\n"
    )
    return path


def tree_env(tree: Path, home: Path) -> dict[str, str]:
    """The environment that runs `python -P -m mlserve` from `tree`. `-P` keeps the working
    folder off sys.path: without it, run from the repository root, `python -m` imported the
    working tree's mlserve on both sides, whatever PYTHONPATH said (every A/B before this
    check compared the working tree with itself)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "MLSERVE_HOME": str(home)}
    env.pop("MLSERVE_REGISTRY__PATH", None)
    found = subprocess.run(  # noqa: S603
        [PY, "-P", "-c", "import mlserve; print(mlserve.__file__)"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"mlserve for {tree} would be imported from {found}: not the tree measured")
    return env


def train_iris(tree: Path, home: Path) -> None:
    """Train the iris sample (a float-matrix model) into the shared registry with `tree`."""
    env = tree_env(tree, home)
    cmd = [PY, "-P", "-m", "mlserve", "train", "--sample", "iris", "--name", "iris"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)  # noqa: S603


def check_answers(url: str, side: str) -> None:
    """Both workloads answer 200 on this side (a wrong body would measure error pages), and
    its feedback store takes a label (a side whose store failed to open records nothing)."""
    for path, body in (
        ("/api/predict", {"text": "The staff were friendly."}),
        ("/api/predict", TABULAR_BODY),
    ):
        res = httpx.post(f"{url}{path}", json=body, timeout=10)
        if res.status_code != 200:
            sys.exit(f"{side}: {path} {body} answered {res.status_code}: {res.text[:300]}")
        answer = res.json()
        label = {"request_id": answer["request_id"], "label": answer["prediction"]}
        res = httpx.post(f"{url}/api/feedback", json=label, timeout=10)
        if res.status_code != 200:
            sys.exit(f"{side}: /api/feedback answered {res.status_code}: {res.text[:300]}")


def serve(name: str, tree: Path, home: Path, state: Path) -> Server:
    """`mlserve serve` from `tree` over the shared registry in `home`, with its own feedback
    and job stores in `state`: sides must not share them (a newer schema makes an older
    mlserve refuse the file, and it would then run without recording feedback)."""
    port = free_port()
    env = tree_env(tree, home)
    env["MLSERVE_FEEDBACK__DATABASE"] = str(state / "feedback.sqlite3")
    env["MLSERVE_JOBS__DATABASE"] = str(state / "jobs.sqlite3")
    cmd = [PY, "-P", "-m", "mlserve", "serve", "--port", str(port)]
    return Server(name, cmd, env, port, "/api/ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit to compare with")
    parser.add_argument("--head", help="commit to measure (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    args = parser.parse_args()
    if WRK is None:
        sys.exit("wrk is required (apt-get install wrk)")
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlserve-ab-") as scratch:
        work = Path(scratch)
        base_tree = export_tree(args.base, _mkdir(work / "base"))
        head_tree = export_tree(args.head, _mkdir(work / "head")) if args.head else ROOT
        home = _mkdir(work / "home")
        # The head's first start trains the sentiment sample into the shared registry; the
        # head then trains iris next to it. Each side checks it answers both before measuring.
        with serve("ab-head", head_tree, home, work / "state-first"):
            pass
        train_iris(head_tree, home)
        tabular = tabular_script(work)
        sides = {"base": base_tree, "head": head_tree}
        results: dict[str, dict[str, list[float]]] = {
            side: {
                "single_rps": [],
                "single_p99_ms": [],
                "batch_rps": [],
                "tabular_rps": [],
                "tabular_p99_ms": [],
            }
            for side in sides
        }
        for round_no in range(args.rounds):
            order = ["base", "head"] if round_no % 2 == 0 else ["head", "base"]
            for side in order:
                # Fresh stores each round: both sides start every round alike.
                state = work / f"state-{side}-{round_no}"
                with serve(f"ab-{side}", sides[side], home, state) as server:
                    url = f"http://127.0.0.1:{server.port}"
                    check_answers(url, side)
                    run_wrk(f"{url}/api/predict", HERE / "predict.lua", 8, 2)  # warm-up
                    run_wrk(f"{url}/api/predict", tabular, 8, 2)
                    single = run_wrk(f"{url}/api/predict", HERE / "predict.lua", 64, args.duration)
                    batch = run_wrk(
                        f"{url}/api/predict/batch", HERE / "batch.lua", 8, args.duration
                    )
                    table = run_wrk(f"{url}/api/predict", tabular, 64, args.duration)
                results[side]["single_rps"].append(single["rps"])
                results[side]["single_p99_ms"].append(single["p99_ms"])
                results[side]["batch_rps"].append(batch["rps"])
                results[side]["tabular_rps"].append(table["rps"])
                results[side]["tabular_p99_ms"].append(table["p99_ms"])
                print(
                    f"round {round_no + 1} {side}: single {single['rps']:,.0f} req/s "
                    f"(p99 {single['p99_ms']:.1f} ms, errors {single['errors']:.0f}), "
                    f"batch {batch['rps']:,.0f} req/s (errors {batch['errors']:.0f}), "
                    f"tabular {table['rps']:,.0f} req/s (p99 {table['p99_ms']:.1f} ms, "
                    f"errors {table['errors']:.0f})",
                    flush=True,
                )
    summary = {
        side: {key: statistics.median(values) for key, values in row.items()}
        for side, row in results.items()
    }
    head = args.head or "working tree"
    print(f"\nmedians over {args.rounds} rounds ({args.duration} s each), {args.base} → {head}:")
    print(
        "| | single text c=64 req/s | p99 ms | batch (100 texts) c=8 req/s "
        "| single tabular (iris) c=64 req/s | p99 ms |"
    )
    print("|---|---|---|---|---|---|")
    for side in ("base", "head"):
        row = summary[side]
        print(
            f"| {side} | {row['single_rps']:,.0f} | {row['single_p99_ms']:.1f} "
            f"| {row['batch_rps']:,.0f} | {row['tabular_rps']:,.0f} "
            f"| {row['tabular_p99_ms']:.1f} |"
        )
    ratio = {
        key: summary["head"][key] / summary["base"][key]
        for key in ("single_rps", "batch_rps", "tabular_rps")
    }
    print(
        f"| head / base | {ratio['single_rps']:.3f} | | {ratio['batch_rps']:.3f} "
        f"| {ratio['tabular_rps']:.3f} | |"
    )
    report = {"base": args.base, "head": head, "rounds": results}
    (OUT / "ab.json").write_text(json.dumps(report, indent=2))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
