"""A/B: the working tree against an earlier commit, side by side, in alternating rounds.

Both servers run `mlserve serve` with default settings over the same registry (the bundled
sentiment sample), pinned to core 0; wrk runs on core 1. Each round measures one text per
request at 64 connections and 100-text batches at 8 connections, first for one side, then
for the other (the order alternates), so machine noise falls on both alike. Used to show a
restructure or an optimisation kept (or changed) the request path's speed.

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


def serve(name: str, tree: Path, home: Path) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "MLSERVE_HOME": str(home)}
    env.pop("MLSERVE_REGISTRY__PATH", None)
    cmd = [PY, "-m", "mlserve", "serve", "--port", str(port)]
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
        # The head's first start trains the sample into the shared registry.
        with serve("ab-head", head_tree, home):
            pass
        sides = {"base": base_tree, "head": head_tree}
        results: dict[str, dict[str, list[float]]] = {
            side: {"single_rps": [], "single_p99_ms": [], "batch_rps": []} for side in sides
        }
        for round_no in range(args.rounds):
            order = ["base", "head"] if round_no % 2 == 0 else ["head", "base"]
            for side in order:
                with serve(f"ab-{side}", sides[side], home) as server:
                    url = f"http://127.0.0.1:{server.port}"
                    run_wrk(f"{url}/api/predict", HERE / "predict.lua", 8, 2)  # warm-up
                    single = run_wrk(f"{url}/api/predict", HERE / "predict.lua", 64, args.duration)
                    batch = run_wrk(
                        f"{url}/api/predict/batch", HERE / "batch.lua", 8, args.duration
                    )
                results[side]["single_rps"].append(single["rps"])
                results[side]["single_p99_ms"].append(single["p99_ms"])
                results[side]["batch_rps"].append(batch["rps"])
                print(
                    f"round {round_no + 1} {side}: single {single['rps']:,.0f} req/s "
                    f"(p99 {single['p99_ms']:.1f} ms, errors {single['errors']:.0f}), "
                    f"batch {batch['rps']:,.0f} req/s (errors {batch['errors']:.0f})",
                    flush=True,
                )
    summary = {
        side: {key: statistics.median(values) for key, values in row.items()}
        for side, row in results.items()
    }
    head = args.head or "working tree"
    print(f"\nmedians over {args.rounds} rounds ({args.duration} s each), {args.base} → {head}:")
    print("| | single text c=64 req/s | p99 ms | batch (100 texts) c=8 req/s |")
    print("|---|---|---|---|")
    for side in ("base", "head"):
        row = summary[side]
        print(
            f"| {side} | {row['single_rps']:,.0f} | {row['single_p99_ms']:.1f} "
            f"| {row['batch_rps']:,.0f} |"
        )
    ratio_single = summary["head"]["single_rps"] / summary["base"]["single_rps"]
    ratio_batch = summary["head"]["batch_rps"] / summary["base"]["batch_rps"]
    print(f"| head / base | {ratio_single:.3f} | | {ratio_batch:.3f} |")
    report = {"base": args.base, "head": head, "rounds": results}
    (OUT / "ab.json").write_text(json.dumps(report, indent=2))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
