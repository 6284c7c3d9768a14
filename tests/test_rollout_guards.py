"""The rollout guards: every rule that decides a step, on counts alone."""

from __future__ import annotations

import pytest

from mlserve.rollouts import Guards, RolloutPlan, WindowCounts
from mlserve.serving.guards import Accuracy, accuracy_breached, judge


def plan(**changes: object) -> RolloutPlan:
    fields: dict[str, object] = {
        "model": "m",
        "alias": "production",
        "baseline": 1,
        "candidate": 2,
        "min_requests": 100,
    }
    fields.update(changes)
    return RolloutPlan(**fields)  # type: ignore[arg-type]


def counts(requests: int, errors: int = 0, ms: float = 2.0) -> WindowCounts:
    window = WindowCounts()
    window.observe(ms / 1000, failed=False, n=requests - errors)
    if errors:
        window.observe(ms / 1000, failed=True, n=errors)
    return window


def test_a_step_waits_for_the_candidates_minimum_sample() -> None:
    verdict = judge(plan(), {2: counts(99), 1: counts(2000)})
    assert verdict.breach is None
    assert not verdict.ready
    assert verdict.figures["error_rate"]["status"] == "waiting"
    assert verdict.figures["error_rate"]["candidate"] == {"value": 0.0, "n": 99}


def test_a_clean_candidate_with_its_sample_passes() -> None:
    verdict = judge(plan(), {2: counts(100), 1: counts(2000, errors=3)})
    assert verdict.breach is None
    assert verdict.ready
    assert verdict.figures["error_rate"]["status"] == "ok"
    assert verdict.figures["error_rate"]["baseline"] == {"value": 3 / 2000, "n": 2000}


def test_errors_past_the_limit_of_the_whole_sample_breach_before_it_is_reached() -> None:
    # 1 % of 100 is 1 error: a second one cannot be brought under the limit by more requests.
    assert judge(plan(), {2: counts(10, errors=1)}).breach is None
    verdict = judge(plan(), {2: counts(10, errors=2)})
    assert verdict.breach is not None and "error rate" in verdict.breach
    assert verdict.figures["error_rate"]["status"] == "breached"


def test_an_error_rate_over_the_limit_is_excused_only_by_a_baseline_as_bad() -> None:
    # 3 % over 100 predictions would breach the early rule; widen the sample to test the rate.
    wide = plan(min_requests=1000)
    assert judge(wide, {2: counts(1000, errors=20), 1: counts(1000, errors=5)}).breach
    verdict = judge(wide, {2: counts(1000, errors=9), 1: counts(1000, errors=30)})
    assert verdict.breach is None  # 0.9 % is under the 1 % limit anyway
    flaky_everywhere = plan(min_requests=1000, guards=Guards(max_error_rate=0.005))
    verdict = judge(flaky_everywhere, {2: counts(1000, errors=4), 1: counts(1000, errors=5)})
    assert verdict.breach is None
    # Over the limit but no worse than a baseline with its own sample: not the candidate's fault.
    verdict = judge(flaky_everywhere, {2: counts(1000, errors=5), 1: counts(1000, errors=6)})
    assert verdict.breach is None


def test_p99_is_judged_against_its_limit_and_the_baseline() -> None:
    slow = plan(guards=Guards(max_error_rate=None, max_p99_ms=50))
    verdict = judge(slow, {2: counts(200, ms=120), 1: counts(200, ms=2)})
    assert verdict.breach is not None and "p99" in verdict.breach
    assert verdict.figures["p99_ms"]["candidate"]["value"] >= 120
    assert verdict.figures["error_rate"]["status"] == "off"
    assert judge(slow, {2: counts(200, ms=120), 1: counts(200, ms=300)}).breach is None
    assert judge(slow, {2: counts(200, ms=20), 1: counts(200, ms=2)}).breach is None
    # At a 100 % step the baseline has no sample: the limit alone decides.
    assert judge(slow, {2: counts(200, ms=120)}).breach is not None


def test_accuracy_is_off_without_min_labels_and_waits_for_both_versions() -> None:
    no_labels = judge(plan(), {2: counts(100)}, {2: Accuracy(0, 500), 1: Accuracy(500, 500)})
    assert no_labels.breach is None
    assert no_labels.figures["accuracy"]["status"] == "off"
    labelled = plan(min_labels=50)
    verdict = judge(labelled, {2: counts(100)}, {2: Accuracy(0, 60), 1: Accuracy(40, 49)})
    assert verdict.breach is None and not verdict.ready
    assert verdict.figures["accuracy"]["status"] == "waiting"


def test_a_clearly_worse_candidate_breaches_the_accuracy_guard() -> None:
    labelled = plan(min_labels=50)
    verdict = judge(labelled, {2: counts(100)}, {2: Accuracy(10, 60), 1: Accuracy(55, 60)})
    assert verdict.breach is not None and "accuracy" in verdict.breach
    assert verdict.figures["accuracy"]["candidate"] == {"value": 10 / 60, "n": 60}


@pytest.mark.parametrize(
    ("candidate", "baseline", "breached"),
    [
        (Accuracy(45, 50), Accuracy(47, 50), False),  # 4 points on 50 labels: noise
        (Accuracy(900, 1000), Accuracy(960, 1000), True),  # 6 points on 1,000: real
        (Accuracy(950, 1000), Accuracy(960, 1000), False),  # within the 2-point allowance
        (Accuracy(50, 50), Accuracy(50, 50), False),  # no variance, no drop
        (Accuracy(47, 50), Accuracy(50, 50), False),  # 6 points on 50 labels: still noise
        (Accuracy(0, 50), Accuracy(50, 50), True),  # no variance at all: the drop decides
    ],
)
def test_small_samples_need_stronger_evidence(
    candidate: Accuracy, baseline: Accuracy, breached: bool
) -> None:
    assert accuracy_breached(candidate, baseline, 0.02) is breached


def test_latency_quantiles_come_from_bucket_bounds() -> None:
    window = counts(99, ms=2.0)
    window.observe(0.5, failed=False)
    assert 2.0 <= window.quantile_ms(0.99) < 2.5  # type: ignore[operator]
    assert window.quantile_ms(1.0) >= 500  # type: ignore[operator]
    assert WindowCounts().quantile_ms(0.99) is None
    assert WindowCounts.from_list(window.to_list()) == window
