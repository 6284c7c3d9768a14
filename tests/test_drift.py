"""Live-quality maths: PSI with smoothing, histograms, confusion matrices, accuracy, macro-F1."""

from __future__ import annotations

import math
import random

import pytest

from mlserve.serving import drift


# ---------------------------------------------------------------------------- PSI
def test_identical_distributions_have_zero_psi() -> None:
    shares = [0.2, 0.3, 0.5]
    assert drift.psi(shares, shares) == 0.0
    assert drift.psi([2, 3, 5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-15)


def test_psi_follows_the_documented_formula() -> None:
    expected, actual = [0.5, 0.5], [0.9, 0.1]
    eps, k = drift.PSI_EPSILON, 2
    e = [(p + eps) / (1 + k * eps) for p in expected]
    a = [(p + eps) / (1 + k * eps) for p in actual]
    by_hand = sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))

    assert drift.psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    # The smoothing barely moves a distribution without empty bins: the textbook value.
    assert drift.psi(expected, actual) == pytest.approx(
        0.4 * math.log(0.9 / 0.5) + 0.4 * math.log(0.5 / 0.1), rel=1e-3
    )


def test_psi_terms_are_non_negative_and_add_up() -> None:
    rng = random.Random(7)
    for _ in range(200):
        k = rng.randint(2, 12)
        expected = [rng.random() for _ in range(k)]
        actual = [rng.random() for _ in range(k)]
        terms = drift.psi_terms(expected, actual)
        assert all(t >= 0 for t in terms)
        assert math.fsum(terms) == pytest.approx(drift.psi(expected, actual))


def test_psi_is_symmetric() -> None:
    assert drift.psi([0.1, 0.9], [0.6, 0.4]) == pytest.approx(drift.psi([0.6, 0.4], [0.1, 0.9]))


def test_an_empty_bin_gives_a_large_but_finite_psi() -> None:
    value = drift.psi([0.5, 0.5, 0.0], [0.4, 0.3, 0.3])
    assert math.isfinite(value)
    assert value > 1.0
    assert math.isfinite(drift.psi([1, 0, 0], [0, 0, 1]))


def test_psi_grows_with_the_shift() -> None:
    base = [0.34, 0.33, 0.33]
    shifts = [[0.34, 0.33, 0.33], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2], [0.9, 0.05, 0.05]]
    values = [drift.psi(base, s) for s in shifts]
    assert values == sorted(values)
    assert values[0] < 0.001 < values[1] < drift.PSI_MODERATE < values[3]


def test_smoothing_keeps_shares_summing_to_one() -> None:
    for values in ([0, 0, 0], [1, 0], [3, 1, 0, 0], [0.2, 0.8]):
        smoothed = drift.smooth(values)
        assert math.fsum(smoothed) == pytest.approx(1.0)
        assert min(smoothed) > 0
    assert drift.smooth([0, 0]) == [0.5, 0.5]  # nothing counted: uniform


def test_bins_must_match() -> None:
    with pytest.raises(ValueError, match="bins"):
        drift.psi([0.5, 0.5], [1.0])
    assert drift.psi([], []) == 0.0


@pytest.mark.parametrize(
    ("value", "status"),
    [(0.0, "stable"), (0.099, "stable"), (0.1, "moderate"), (0.249, "moderate"),
     (0.25, "significant"), (3.0, "significant")],
)  # fmt: skip
def test_status_thresholds(value: float, status: str) -> None:
    assert drift.drift_status(value) == status


# ---------------------------------------------------------------------------- histogram
def test_histogram_counts_as_numpy_does() -> None:
    import numpy as np

    rng = random.Random(3)
    values = [rng.random() for _ in range(2000)] + [0.0, 1.0, 0.5, 0.1, 0.9]
    counts, edges = np.histogram(values, bins=10, range=(0.0, 1.0))

    assert drift.histogram(values, [float(e) for e in edges]) == counts.tolist()


def test_histogram_ignores_values_outside_the_edges() -> None:
    assert drift.histogram([-0.1, 0.0, 0.5, 1.0, 1.1], [0.0, 0.5, 1.0]) == [1, 2]
    with pytest.raises(ValueError):
        drift.histogram([0.5], [0.0])


# ---------------------------------------------------------------------------- figures
def test_figures_agree_with_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(11)
    for _ in range(50):
        n = rng.randint(1, 60)
        classes = ["a", "b", "c", "d"][: rng.randint(1, 4)]
        y_true = [rng.choice(classes) for _ in range(n)]
        y_pred = [rng.choice(classes) for _ in range(n)]

        figures = drift.figures(drift.count_pairs(zip(y_true, y_pred, strict=True)))

        assert figures.count == n
        assert figures.correct == sum(t == p for t, p in zip(y_true, y_pred, strict=True))
        assert figures.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
        assert figures.macro_f1 == pytest.approx(
            f1_score(y_true, y_pred, average="macro", zero_division=0)
        )


def test_seven_right_of_ten_is_exactly_0_7() -> None:
    pairs = [("pos", "pos")] * 4 + [("neg", "neg")] * 3 + [("pos", "neg")] * 3
    figures = drift.figures(drift.count_pairs(pairs))
    assert (figures.count, figures.correct, figures.accuracy) == (10, 7, 0.7)


def test_no_labels_means_no_figures() -> None:
    assert drift.figures({}) == drift.Figures(count=0, correct=0, accuracy=None, macro_f1=None)


def test_confusion_matrix_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix

    rng = random.Random(5)
    labels = ["negative", "neutral", "positive"]
    y_true = [rng.choice(labels) for _ in range(100)]
    y_pred = [rng.choice(labels) for _ in range(100)]

    order, matrix = drift.confusion_matrix(
        drift.count_pairs(zip(y_true, y_pred, strict=True)), labels
    )

    assert order == labels
    assert matrix == confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_confusion_matrix_keeps_labels_it_was_not_told_about() -> None:
    order, matrix = drift.confusion_matrix({("x", "a"): 2, ("a", "a"): 1}, ["a", "b"])
    assert order == ["a", "b", "x"]
    assert matrix == [[1, 0, 0], [0, 0, 0], [2, 0, 0]]


def test_rebinning_fine_confidence_bins_onto_training_edges() -> None:
    fine = [0] * 100
    fine[0], fine[9], fine[10], fine[55], fine[99] = 1, 2, 3, 4, 5
    edges = [i / 10 for i in range(11)]

    assert drift.rebin(fine, edges) == [3, 3, 0, 0, 0, 4, 0, 0, 0, 5]
    assert drift.rebin(fine, [0.0, 0.5, 1.0]) == [6, 9]
