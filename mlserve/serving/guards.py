"""A rollout's guards: judge the candidate against the baseline over the same window.

Pure functions of the counts, so every rule is unit-tested without a server:
- error rate (5xx of the version's predictions in the current step) and p99 latency (same
  window) need `min_requests` of the candidate's; a guard is breached when the candidate is
  over its limit and worse than the baseline (a baseline without its own minimum sample, as at
  a 100 % step, does not excuse the candidate: the limit alone decides). Errors already past
  the limit of the whole minimum sample breach at once (more requests cannot bring the rate
  under it).
- accuracy (labels sent back through /api/feedback for predictions made since the rollout
  started) needs `min_labels` labels of each version; it is breached only when a one-sided
  test at 95 % says the candidate's accuracy is more than `max_accuracy_drop` below the
  baseline's: z = (drop - max_drop) / se > 1.645 with se the unpooled standard error of the
  two proportions. Small samples give a wide se, so a noisy dip does not roll back; a
  candidate that is clearly worse does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlserve.rollouts.base import RolloutPlan, WindowCounts

__all__ = ["Z_95", "Accuracy", "Judgement", "accuracy_breached", "judge"]

Z_95 = 1.6449  # one-sided 95 % quantile of the standard normal


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Labelled predictions of one version: how many, how many the model got right."""

    correct: int
    labelled: int

    @property
    def value(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


@dataclass(slots=True)
class Judgement:
    """Every guard's figures (the wire's GuardFigure shape), the first breach, and whether
    every guard that is on has its sample (a step may only end then)."""

    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    breach: str | None = None
    ready: bool = True


def _figure(
    limit: float | None,
    status: str,
    candidate: tuple[float | None, int],
    baseline: tuple[float | None, int],
) -> dict[str, Any]:
    return {
        "limit": limit,
        "status": status,
        "candidate": {"value": candidate[0], "n": candidate[1]},
        "baseline": {"value": baseline[0], "n": baseline[1]},
    }


def accuracy_breached(candidate: Accuracy, baseline: Accuracy, max_drop: float) -> bool:
    """The one-sided test: is the candidate's accuracy more than max_drop below the
    baseline's, at 95 %?"""
    pc, pb = candidate.value, baseline.value
    if pc is None or pb is None:
        return False
    drop = pb - pc
    se = math.sqrt(pb * (1 - pb) / baseline.labelled + pc * (1 - pc) / candidate.labelled)
    if se == 0.0:
        return drop > max_drop
    return (drop - max_drop) / se > Z_95


def judge(
    plan: RolloutPlan,
    windows: dict[int, WindowCounts],
    accuracy: dict[int, Accuracy] | None = None,
) -> Judgement:
    """The guards of `plan` over one step's `windows` (by version) and the accuracy of each
    version since the rollout started (None: not read, the accuracy guard is off)."""
    out = Judgement()
    cand = windows.get(plan.candidate) or WindowCounts()
    base = windows.get(plan.baseline) or WindowCounts()
    need = plan.min_requests
    guards = plan.guards

    # ---- error rate
    limit = guards.max_error_rate
    rate_c = cand.errors / cand.requests if cand.requests else None
    rate_b = base.errors / base.requests if base.requests else None
    figures = ((rate_c, cand.requests), (rate_b, base.requests))
    if limit is None:
        out.figures["error_rate"] = _figure(None, "off", *figures)
    elif cand.errors > limit * need:
        out.figures["error_rate"] = _figure(limit, "breached", *figures)
        out.breach = out.breach or (
            f"error rate: {cand.errors} of the candidate's {cand.requests} predictions failed, "
            f"over {limit:.2%} of the minimum sample ({need})"
        )
    elif cand.requests < need or rate_c is None:
        out.figures["error_rate"] = _figure(limit, "waiting", *figures)
        out.ready = False
    elif rate_c > limit and not (base.requests >= need and rate_b is not None and rate_b >= rate_c):
        out.figures["error_rate"] = _figure(limit, "breached", *figures)
        out.breach = out.breach or (
            f"error rate: candidate {rate_c:.2%} over {cand.requests} predictions, limit "
            f"{limit:.2%}, baseline {_pct(rate_b)}"
        )
    else:
        out.figures["error_rate"] = _figure(limit, "ok", *figures)

    # ---- p99 latency
    limit = guards.max_p99_ms
    p99_c, p99_b = cand.quantile_ms(0.99), base.quantile_ms(0.99)
    figures = ((p99_c, cand.requests), (p99_b, base.requests))
    if limit is None:
        out.figures["p99_ms"] = _figure(None, "off", *figures)
    elif cand.requests < need or p99_c is None:
        out.figures["p99_ms"] = _figure(limit, "waiting", *figures)
        out.ready = False
    elif p99_c > limit and not (base.requests >= need and p99_b is not None and p99_b >= p99_c):
        out.figures["p99_ms"] = _figure(limit, "breached", *figures)
        out.breach = out.breach or (
            f"p99 latency: candidate {p99_c:.1f} ms over {cand.requests} predictions, limit "
            f"{limit:g} ms, baseline {_ms(p99_b)}"
        )
    else:
        out.figures["p99_ms"] = _figure(limit, "ok", *figures)

    # ---- live accuracy
    limit = guards.max_accuracy_drop
    if accuracy is None or limit is None or plan.min_labels <= 0:
        out.figures["accuracy"] = _figure(
            limit if plan.min_labels > 0 else None, "off", (None, 0), (None, 0)
        )
        return out
    acc_c = accuracy.get(plan.candidate) or Accuracy(0, 0)
    acc_b = accuracy.get(plan.baseline) or Accuracy(0, 0)
    figures = ((acc_c.value, acc_c.labelled), (acc_b.value, acc_b.labelled))
    if min(acc_c.labelled, acc_b.labelled) < plan.min_labels:
        out.figures["accuracy"] = _figure(limit, "waiting", *figures)
        out.ready = False
    elif accuracy_breached(acc_c, acc_b, limit):
        out.figures["accuracy"] = _figure(limit, "breached", *figures)
        out.breach = out.breach or (
            f"accuracy: candidate {acc_c.value:.1%} ({acc_c.labelled} labels) against "
            f"baseline {acc_b.value:.1%} ({acc_b.labelled} labels), a drop over "
            f"{limit:.1%} at 95 % confidence"
        )
    else:
        out.figures["accuracy"] = _figure(limit, "ok", *figures)
    return out


def _pct(value: float | None) -> str:
    return "no sample" if value is None else f"{value:.2%}"


def _ms(value: float | None) -> str:
    return "no sample" if value is None else f"{value:.1f} ms"
