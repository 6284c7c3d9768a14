"""Live-quality maths: confusion matrices, accuracy, macro-F1 and the population stability index.

Pure functions over plain Python values (no numpy, no I/O), shared by the server's quality
report and its metrics.

Population stability index (PSI) of a live distribution `a` against an expected one `e` over
the same k bins (classes, or confidence ranges):

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where a_i and e_i are shares (each distribution sums to 1). A bin empty on one side would make
the logarithm infinite, so both distributions are smoothed first: s_i = (p_i + eps) / (1 + k*eps)
with eps = PSI_EPSILON (1e-4) — every bin gets a tiny floor and the shares still sum to 1.
Each term is >= 0, so the per-bin terms show where the shift is and their sum is the PSI.
Rules of thumb: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

PSI_EPSILON = 1e-4
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25

DriftStatus = Literal["stable", "moderate", "significant"]


# ---------------------------------------------------------------------------- distributions
def shares(counts: Sequence[float]) -> list[float]:
    """Counts as shares of their total (all zeros when the total is 0)."""
    total = float(sum(counts))
    if total <= 0:
        return [0.0] * len(counts)
    return [c / total for c in counts]


def smooth(values: Sequence[float], epsilon: float = PSI_EPSILON) -> list[float]:
    """Shares with an additive floor: (p_i + eps) / (1 + k*eps), renormalised first so that
    the result sums to 1 whatever the input summed to (an all-zero input becomes uniform)."""
    k = len(values)
    if k and sum(values) <= 0:
        return [1.0 / k] * k
    return [(p + epsilon) / (1.0 + k * epsilon) for p in shares(values)]


def psi_terms(
    expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON
) -> list[float]:
    """Each bin's contribution (a_i - e_i) * ln(a_i / e_i) to the PSI (each >= 0)."""
    if len(expected) != len(actual):
        raise ValueError(f"expected has {len(expected)} bins, actual {len(actual)}")
    if not expected:
        return []
    e = smooth(expected, epsilon)
    a = smooth(actual, epsilon)
    return [(ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True)]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `actual` against `expected` (see the module docstring).
    Either side may be counts or shares: both are normalised."""
    return math.fsum(psi_terms(expected, actual, epsilon))


def drift_status(value: float) -> DriftStatus:
    if value >= PSI_SIGNIFICANT:
        return "significant"
    if value >= PSI_MODERATE:
        return "moderate"
    return "stable"


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts of `values` in the bins [edges[i], edges[i+1]) — the last bin closed on the right,
    as numpy.histogram counts them; values outside [edges[0], edges[-1]] are not counted."""
    bins = len(edges) - 1
    if bins < 1:
        raise ValueError("a histogram needs at least two edges")
    counts = [0] * bins
    low, high = edges[0], edges[-1]
    for value in values:
        if value is None or not low <= value <= high:
            continue
        i = bisect.bisect_right(edges, value) - 1
        counts[min(i, bins - 1)] += 1
    return counts


def rebin(counts: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Counts of len(counts) equal-width bins over [0, 1] moved to the bins of `edges`, each
    fine bin by its midpoint (exact when every edge is a multiple of the fine bins' width)."""
    k = len(counts)
    midpoints = [(i + 0.5) / k for i in range(k)]
    out = [0.0] * (len(edges) - 1)
    for point, n in zip(midpoints, counts, strict=True):
        if n and edges[0] <= point <= edges[-1]:
            i = bisect.bisect_right(edges, point) - 1
            out[min(i, len(out) - 1)] += n
    return out


# ---------------------------------------------------------------------------- classification
@dataclass(frozen=True, slots=True)
class Figures:
    """Accuracy and macro-F1 of labelled predictions (None when there are none)."""

    count: int
    correct: int
    accuracy: float | None
    macro_f1: float | None


def confusion_matrix(
    pairs: Mapping[tuple[str, str], int], labels: Sequence[str]
) -> tuple[list[str], list[list[int]]]:
    """(labels, matrix) with matrix[i][j] = how many predictions of labels[j] were truly
    labels[i] — rows are the true labels, columns the predicted ones. Labels seen in `pairs`
    but missing from `labels` are appended (sorted), so no count is lost."""
    order = list(labels)
    known = set(order)
    extra = sorted({x for pair in pairs for x in pair if x not in known})
    order += extra
    index = {label: i for i, label in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for (true, predicted), n in pairs.items():
        matrix[index[true]][index[predicted]] += n
    return order, matrix


def figures(pairs: Mapping[tuple[str, str], int]) -> Figures:
    """Accuracy and macro-F1 from (true label, predicted label) → count.

    Macro-F1 averages the per-class F1 over the classes that occur among the true or the
    predicted labels (scikit-learn's f1_score(average="macro") without `labels`): a class the
    window never saw nor predicted does not count as a zero."""
    total = sum(pairs.values())
    if total == 0:
        return Figures(count=0, correct=0, accuracy=None, macro_f1=None)
    correct = sum(n for (t, p), n in pairs.items() if t == p)
    classes = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    f1s = []
    for cls in classes:
        tp = pairs.get((cls, cls), 0)
        predicted = sum(n for (_, p), n in pairs.items() if p == cls)
        actual = sum(n for (t, _), n in pairs.items() if t == cls)
        denominator = predicted + actual
        f1s.append(2.0 * tp / denominator if denominator else 0.0)
    return Figures(
        count=total,
        correct=correct,
        accuracy=correct / total,
        macro_f1=math.fsum(f1s) / len(f1s),
    )


def count_pairs(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(true, predicted) pairs → counts."""
    out: dict[tuple[str, str], int] = {}
    for pair in pairs:
        out[pair] = out.get(pair, 0) + 1
    return out
