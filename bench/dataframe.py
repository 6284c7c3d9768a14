"""In process, no HTTP: what a batch costs on the float-matrix path and on the DataFrame path.

Three models fitted here on generated data, registered into a temporary registry and loaded
as the server loads them (`LoadedModel`):

- `float matrix`: LogisticRegression fitted on a 4-column float array (the old fast path:
  `np.asarray(rows, float)` per batch);
- `DataFrame, 4 floats`: the same estimator fitted on a 4-column numeric DataFrame (one
  DataFrame per batch, built by `Signature.frame` after `Signature.check` of every value);
- `DataFrame pipeline`: ColumnTransformer (OneHotEncoder on a string and a boolean column,
  SimpleImputer + StandardScaler on two numeric ones, one with missing values) then
  LogisticRegression, fitted on a DataFrame.

For batch sizes 1, 8, 64 and 256, each repetition times one batch of every model (the order
rotates, so machine noise falls on all alike), split into its stages:

- `prepare`: `LoadedModel.prepare_features` of every row (a JSON-like dict, as a request
  gives it); for DataFrame models this is ordering plus `Signature.check`, also timed alone;
- `build`: the float matrix, or `Signature.frame` (one DataFrame for the batch);
- `model`: the model call on it (`predict_proba` and the per-row answers).

Medians over the repetitions, bounded both in count (--max-reps) and in time (--seconds).

    python bench/dataframe.py [--seconds 60] [--max-reps 2000] [--sizes 1,8,64,256]
"""

from __future__ import annotations

import os

# As `mlserve serve` does: one thread per model call (set before numpy / scikit-learn load).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.registry import Registry
from mlserve.runtime.model import LoadedModel

NUMERIC = ["f0", "f1", "f2", "f3"]
MIXED = ["city", "member", "age", "income"]
CITIES = ["Lyon", "Oslo", "Porto", "Quito", "Riga", "Turin"]
STAGES = ("prepare", "check", "build", "model", "total")


# ------------------------------------------------------------------------------ data
def numeric_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 4))
    y = np.where(x @ np.array([1.0, -0.5, 0.8, 0.2]) + rng.normal(scale=0.5, size=n) > 0, 1, 0)
    labels = np.array(["no", "yes"])[y]
    return x, labels


def mixed_frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    city = rng.choice(CITIES, size=n)
    member = rng.random(n) < 0.4
    age = rng.normal(40, 12, size=n).round()
    age[rng.random(n) < 0.1] = np.nan  # missing values, imputed by the pipeline
    income = rng.lognormal(10, 0.5, size=n)
    score = (
        (city == "Oslo") * 1.0
        + member * 0.8
        + np.nan_to_num(age, nan=40.0) / 40
        - income / income.mean()
        + rng.normal(scale=0.5, size=n)
    )
    labels = np.where(score > np.median(score), "churn", "stay")
    frame = pd.DataFrame({"city": city, "member": member, "age": age, "income": income})
    return frame, labels


def requests(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a JSON body gives them: Python str, bool, float, None for a missing value."""
    out = []
    for record in frame.to_dict(orient="records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, float) and np.isnan(value):
                row[key] = None
            elif isinstance(value, np.bool_):
                row[key] = bool(value)
            elif isinstance(value, np.floating):
                row[key] = float(value)
            else:
                row[key] = value
        out.append(row)
    return out


# ------------------------------------------------------------------------------ models
def build_models(registry: Registry, rng: np.random.Generator) -> dict[str, tuple[Any, list]]:
    """name → (LoadedModel, request rows) for the three models."""
    x, y = numeric_data(rng, 2000)
    matrix_model = LogisticRegression(max_iter=1000).fit(x, y)
    numeric = pd.DataFrame(x, columns=NUMERIC)
    frame_model = LogisticRegression(max_iter=1000).fit(numeric, y)
    mixed, y_mixed = mixed_frame(rng, 2000)
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("categories", OneHotEncoder(handle_unknown="ignore"), ["city", "member"]),
                        (
                            "numbers",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            ["age", "income"],
                        ),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    ).fit(mixed, y_mixed)

    x_rows, _ = numeric_data(rng, 512)
    numeric_rows = requests(pd.DataFrame(x_rows, columns=NUMERIC))
    mixed_rows = requests(mixed_frame(rng, 512)[0])
    specs = [
        ("float matrix", matrix_model, NUMERIC, numeric_rows, None),
        ("DataFrame, 4 floats", frame_model, None, numeric_rows, None),
        ("DataFrame pipeline", pipeline, None, mixed_rows, mixed_rows[:8]),
    ]
    out: dict[str, tuple[Any, list]] = {}
    for i, (label, estimator, names, rows, example) in enumerate(specs):
        meta = registry.register_estimator(
            estimator, name=f"bench{i}", feature_names=names, example=example
        )
        loaded = registry.load(meta)
        model = LoadedModel(loaded.estimator, loaded.metadata)
        expect_frame = label != "float matrix"
        if loaded.metadata.input_schema.dataframe != expect_frame:
            raise SystemExit(f"{label}: input_schema.dataframe is not {expect_frame}")
        # The served answers are the estimator's own (a bench of a wrong path measures nothing).
        sample = rows[:64]
        got = [p.probabilities for p in model.predict([model.prepare_features(r) for r in sample])]
        direct = (
            estimator.predict_proba(np.array([[r[n] for n in NUMERIC] for r in sample]))
            if not expect_frame
            else estimator.predict_proba(pd.DataFrame(sample))
        )
        keys = [str(c) for c in estimator.classes_]
        served = np.array([[g[k] for k in keys] for g in got])  # type: ignore[index]
        if not np.allclose(served, direct, rtol=0, atol=1e-12):
            raise SystemExit(f"{label}: served probabilities differ from predict_proba")
        out[label] = (model, rows)
    return out


# ------------------------------------------------------------------------------ timing
def time_batch(model: LoadedModel, batch: list[dict[str, Any]]) -> dict[str, float]:
    """One batch through the stages; nanoseconds per stage."""
    clock = time.perf_counter_ns
    t0 = clock()
    prepared = [model.prepare_features(row) for row in batch]
    t1 = clock()
    x = model._matrix(prepared)  # noqa: SLF001 - the stage being measured
    t2 = clock()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        model._predict(x)  # noqa: SLF001 - as LoadedModel.predict calls it
    t3 = clock()
    check = 0.0
    signature = model.signature
    if signature is not None:
        names = model.feature_names
        ordered = [[row[n] for n in names] for row in batch]
        t4 = clock()
        for values in ordered:
            signature.check(values, "features")
        check = clock() - t4
    return {
        "prepare": t1 - t0,
        "check": check,
        "build": t2 - t1,
        "model": t3 - t2,
        "total": t3 - t0,
    }


def measure(
    models: dict[str, tuple[Any, list]], sizes: list[int], seconds: float, max_reps: int
) -> tuple[dict[tuple[str, int], dict[str, float]], int]:
    samples: dict[tuple[str, int], dict[str, list[float]]] = {
        (name, size): {stage: [] for stage in STAGES} for name in models for size in sizes
    }
    names = list(models)
    deadline = time.monotonic() + seconds
    reps = 0
    while reps < max_reps and time.monotonic() < deadline:
        for size in sizes:
            shift = reps % len(names)
            for name in names[shift:] + names[:shift]:  # rotate which model goes first
                model, rows = models[name]
                start = (reps * size) % (len(rows) - size + 1)
                for stage, ns in time_batch(model, rows[start : start + size]).items():
                    samples[(name, size)][stage].append(ns)
        reps += 1
    medians = {
        key: {stage: statistics.median(v) / 1000 for stage, v in stages.items()}
        for key, stages in samples.items()
    }
    return medians, reps


def alternative_frames(models: dict[str, tuple[Any, list]], sizes: list[int]) -> list[str]:
    """`Signature.frame` against one float block for the all-float DataFrame model: what a
    single `pd.DataFrame(np.asarray(rows, float), columns=names)` would cost instead
    (interleaved, like the main table)."""
    model, rows = models["DataFrame, 4 floats"]
    signature = model.signature
    names = model.feature_names
    predict_proba = model.estimator.predict_proba

    def block(prepared: list[list[Any]]) -> Any:
        return pd.DataFrame(np.asarray(prepared, dtype=float), columns=names)

    lines = []
    for size in sizes:
        prepared = [model.prepare_features(r) for r in rows[:size]]
        us = _interleaved_us(
            {
                "frame": lambda p=prepared: signature.frame(p),
                "block": lambda p=prepared: block(p),
                "frame_model": lambda p=prepared: predict_proba(signature.frame(p)),
                "block_model": lambda p=prepared: predict_proba(block(p)),
            }
        )
        lines.append(
            f"| {size} | {us['frame']:.1f} | {us['block']:.1f} | {us['frame_model']:.1f} "
            f"| {us['block_model']:.1f} |"
        )
    return lines


def _interleaved_us(fns: dict[str, Callable[[], Any]], reps: int = 400) -> dict[str, float]:
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {name: [] for name in fns}
    order = list(fns)
    for i in range(reps):
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            t = clock()
            fns[name]()
            times[name].append(clock() - t)
    return {name: statistics.median(v) / 1000 for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget for the loop")
    parser.add_argument("--max-reps", type=int, default=2000, help="repetitions at most")
    parser.add_argument("--sizes", default="1,8,64,256", help="batch sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory(prefix="mlserve-dataframe-bench-") as scratch:
        models = build_models(Registry(scratch), rng)
        for model, rows in models.values():  # warm-up: first calls import and cache
            for _ in range(20):
                time_batch(model, rows[:8])
        medians, reps = measure(models, sizes, args.seconds, args.max_reps)
        alternatives = alternative_frames(models, sizes)

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"scikit-learn {sklearn.__version__}; {reps} interleaved repetitions per cell, medians "
        f"in µs (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})\n"
    )
    print(
        "| model | batch | prepare (of which check) | build | model call | total µs/batch "
        "| µs/row |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in models:
        for size in sizes:
            m = medians[(name, size)]
            check = f" ({m['check']:.1f})" if models[name][0].signature is not None else ""
            print(
                f"| {name} | {size} | {m['prepare']:.1f}{check} | {m['build']:.1f} "
                f"| {m['model']:.1f} | {m['total']:.1f} | {m['total'] / size:.2f} |"
            )
    print("\nDataFrame cost over the float matrix (same estimator, same rows), µs per batch:\n")
    print("| batch | total: DataFrame − matrix | build: frame − asarray | model call: Δ |")
    print("|---|---|---|---|")
    for size in sizes:
        a, b = medians[("float matrix", size)], medians[("DataFrame, 4 floats", size)]
        print(
            f"| {size} | {b['total'] - a['total']:.1f} | {b['build'] - a['build']:.1f} "
            f"| {b['model'] - a['model']:.1f} |"
        )
    print(
        "\nAll-float DataFrame model: Signature.frame vs one float block "
        "(pd.DataFrame(np.asarray(rows, float), columns=names)), µs per batch:\n"
    )
    print("| batch | Signature.frame | one block | frame + predict_proba | block + predict_proba |")
    print("|---|---|---|---|---|")
    for line in alternatives:
        print(line)


if __name__ == "__main__":
    main()
