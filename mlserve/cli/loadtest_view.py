"""Terminal rendering for `mlserve loadtest`: the human report and the live progress line."""

from __future__ import annotations

import math
import random
import time
from array import array
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mlserve.loadtest import (
    LATE_AFTER_S,
    PERCENTILES,
    LatencyStats,
    LoadPlan,
    Progress,
    Summary,
    Target,
    percentile,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["LiveView", "render_report"]


def _ms(value: float) -> str:
    if math.isnan(value):
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _bar(fraction: float, width: int) -> str:
    blocks = " ▏▎▍▌▋▊▉█"
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    part = int((cells - full) * 8)
    return "█" * full + (blocks[part] if part and full < width else "")


def render_report(
    summary: Summary, *, target: Target, plan: LoadPlan, processes: int, console: Console
) -> None:
    """The human report: rates, latency table (client and server side), codes, histogram."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    r = summary.result
    lat, srv = summary.latency, summary.server
    procs = f", {processes} processes" if processes > 1 else ""
    console.print(
        f"[bold]{escape(target.method)} {escape(target.url)}[/]  "
        f"[dim]{escape(plan.describe())}{procs}, engine {plan.engine}[/]"
    )
    if r.interrupted:
        console.print("[yellow]interrupted: the figures cover what was measured until then[/]")
    ok_ratio = (r.successes / r.requests * 100) if r.requests else 0.0
    console.print(
        f"[bold]{r.requests:,}[/] requests in {r.duration_s:.2f}s  "
        f"[bold]{summary.throughput:,.1f}[/] successful req/s  "
        f"(rate {summary.rate:,.1f} req/s, success {ok_ratio:.2f}%)"
    )
    if plan.open_loop:
        style = "yellow" if r.late or r.dropped else "dim"
        console.print(
            f"[{style}]schedule: target {plan.rate:g} req/s, {r.late:,} sent more than "
            f"{LATE_AFTER_S * 1000:g} ms late, {r.dropped:,} never sent, "
            f"max lag {r.max_lag_ms:.1f} ms[/]"
        )
    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    table.add_column("latency (ms)")
    for name in ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    table.add_column("n", justify="right")

    def row(label: str, s: LatencyStats) -> list[str]:
        p = s.percentiles
        return [
            label,
            _ms(s.min),
            _ms(s.mean),
            *(_ms(p[k]) for k, _ in PERCENTILES[:2]),
            _ms(p["95th"]),
            _ms(p["99th"]),
            _ms(p["99.9th"]),
            _ms(s.max),
            f"{s.count:,}",
        ]

    table.add_row(*row("client", lat))
    if srv.count:
        table.add_row(*row("server", srv))
    else:
        table.add_row("server", *(["–"] * 8), "0", style="dim")
    console.print(table)
    console.print(
        "[dim]client: request sent to response read; server: its X-Process-Time header[/]"
    )
    codes = "  ".join(f"{code}×{n:,}" for code, n in sorted(r.status_codes.items()))
    failures = "  ".join(f"{kind}×{n:,}" for kind, n in sorted(r.transport_errors.items()))
    console.print(f"status codes: {escape(codes) or 'none'}")
    if failures:
        console.print(f"[red]transport errors: {escape(failures)}[/]")
    for sample in r.error_samples:
        console.print(f"  [red]•[/] {escape(sample)}")
    if lat.histogram:
        hist = Table(box=None, pad_edge=False, show_header=False)
        hist.add_column(justify="right", style="dim")
        hist.add_column()
        hist.add_column(justify="right")
        hist.add_column(justify="right", style="dim")
        peak = max(n for _, _, n in lat.histogram) or 1
        total = lat.count
        for lo, hi, n in lat.histogram:
            hist.add_row(
                f"{_ms(lo)} – {_ms(hi)} ms",
                Text(_bar(n / peak, 40), style="cyan"),
                f"{n:,}",
                f"{n / total * 100:5.1f}%",
            )
        console.print(hist)
    for verdict in summary.thresholds:
        mark = "[green]✓[/]" if verdict.passed else "[bold red]✗[/]"
        console.print(f"{mark} {escape(verdict.describe())}")


class LiveView:
    """Aggregates progress snapshots (from one or several processes) for a rich Live display."""

    def __init__(self, *, processes: int = 1, window_s: float = 1.0) -> None:
        self.started = time.monotonic()
        self.done = [0] * processes
        self.errors = [0] * processes
        self.phase = ["warmup"] * processes
        self.window_s = window_s
        self.recent: deque[tuple[float, array[float]]] = deque()
        self.counts: deque[tuple[float, int]] = deque()
        # Every latency so far, or a uniform reservoir sample of them past RESERVOIR.
        self.sample: list[float] = []
        self.seen = 0
        self._rng = random.Random(0)  # noqa: S311 - sampling for a display, not security

    RESERVOIR = 50_000

    def _keep(self, latencies: Iterable[float]) -> None:
        for value in latencies:
            self.seen += 1
            if len(self.sample) < self.RESERVOIR:
                self.sample.append(value)
            else:
                slot = self._rng.randrange(self.seen)
                if slot < self.RESERVOIR:
                    self.sample[slot] = value

    def update(self, index: int, progress: Progress) -> None:
        now = time.monotonic()
        self.done[index] = progress.done
        self.errors[index] = progress.errors
        self.phase[index] = progress.phase
        if progress.window:
            self.recent.append((now, progress.window))
            self._keep(progress.window)
        self.counts.append((now, sum(self.done)))
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()
        while len(self.counts) > 2 and self.counts[1][0] < now - self.window_s:
            self.counts.popleft()

    def render(self) -> RenderableType:
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        done, errors = sum(self.done), sum(self.errors)
        if "warmup" in self.phase and done == 0:
            return Text(f"warming up… {elapsed:5.1f}s", style="dim")
        rps = math.nan
        if len(self.counts) >= 2:
            (t0, n0), (t1, n1) = self.counts[0], self.counts[-1]
            if t1 - t0 >= 0.2:  # snapshots of several processes arrive close together
                rps = (n1 - n0) / (t1 - t0)
        window: list[float] = []
        for _, chunk in self.recent:
            window.extend(chunk)
        if len(window) > 20_000:  # keep the display cheap: a uniform subsample is plenty
            window = window[:: len(window) // 10_000]
        window.sort()
        so_far = sorted(self.sample)
        p50, p99 = percentile(so_far, 50), percentile(so_far, 99)
        recent_p99 = percentile(window, 99)
        style = "red" if errors else "green"
        return Text.assemble(
            (f"{elapsed:6.1f}s ", "dim"),
            (f"{done:>10,} requests ", "bold"),
            (f"{'–' if math.isnan(rps) else f'{rps:,.0f}':>9} req/s ", ""),
            (f"p50 {_ms(p50):>7} ms  p99 {_ms(p99):>7} ms so far  ", ""),
            (f"(last {self.window_s:g} s: p99 {_ms(recent_p99)} ms)  ", "dim"),
            (f"errors {errors:,}", style),
        )
