"""Terminal rendering for `mlserve rollout`: the status view and the one-line progress log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mlserve.schemas.rollouts import GuardName, RolloutInfo

# The figures' guard names as the CLI spells them (`--guard NAME=VALUE`).
FIGURE_NAMES: dict[GuardName, str] = {
    "error_rate": "error-rate",
    "p99_ms": "p99-ms",
    "accuracy": "accuracy-drop",
}
SHOWN_EVENTS = 5
# Rollout, guard and event statuses.
STATUS_STYLE = {
    "running": "bold cyan",
    "promoted": "bold green",
    "rolled_back": "bold red",
    "aborted": "bold yellow",
    "ok": "green",
    "waiting": "yellow",
    "breached": "bold red",
    "off": "dim",
}


def duration(seconds: float) -> str:
    """133 -> '2m 13s'; 7500 -> '2h 05m'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _pct(value: float) -> str:
    return f"{value:g}%"


def _clock(moment: Any) -> str:
    from datetime import UTC

    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%H:%M:%S}Z"


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'default')}]{status.replace('_', ' ')}[/]"


def _value(guard: str, value: float | None) -> str:
    if value is None:
        return "-"
    if guard == "error_rate":
        return f"{value * 100:.2f}%"
    if guard == "p99_ms":
        return f"{value:.1f} ms"
    return f"{value:.3f}"  # accuracy


def _limit(guard: str, limit: float | None) -> str:
    if limit is None:
        return "off"
    if guard == "error_rate":
        return f"≤ {limit * 100:.2f}%"
    if guard == "p99_ms":
        return f"≤ {limit:g} ms"
    return f"drop ≤ {limit:.3f}"


def _steps_row(info: RolloutInfo) -> str:
    cells = []
    for i, share in enumerate(info.steps):
        if i == info.step:
            style = {"running": "reverse bold cyan", "promoted": "reverse bold green"}.get(
                info.status, "reverse bold red" if info.status == "rolled_back" else "reverse"
            )
            cells.append(f"[{style}] {_pct(share)} [/]")
        elif i < info.step or info.status == "promoted":
            cells.append(f" {_pct(share)} ")
        else:
            cells.append(f"[dim] {_pct(share)} [/]")
    return "→".join(cells)


def _timing(info: RolloutInfo) -> list[str]:
    """Where the traffic goes and when the step may end; once ended, when and with what."""
    if info.status != "running":
        # The server reports weight 0 once ended: say where the traffic went instead.
        if info.status == "promoted":
            where = f"{info.alias} → v{info.candidate}, all traffic to the candidate"
        else:
            where = f"all traffic back on v{info.baseline}"
        if info.ended_at is None:
            return [f"ended   {where}"]
        took = duration((info.ended_at - info.started_at).total_seconds())
        return [f"ended   {_clock(info.ended_at)} (after {took}); {where}"]
    what = "promotion" if info.step >= len(info.steps) - 1 else "next step"
    if info.next_step_in_s is None:
        when = f"{what} once the step has its samples"
    elif info.next_step_in_s <= 0:
        when = f"{what} as soon as the step has its samples"
    else:
        when = f"{what} in {duration(info.next_step_in_s)}"
    return [
        f"weight  {_pct(info.weight)} of traffic to v{info.candidate}; {when}",
        f"        (a step lasts ≥ {duration(info.step_seconds)} and "
        f"≥ {info.min_requests} candidate requests)",
    ]


def guard_rows(info: RolloutInfo) -> list[tuple[str, str, str, str, str]]:
    """(guard, limit, candidate (n), baseline (n), status) for each guard, from the latest
    evaluation; a guard not evaluated yet shows its limit and '-'."""
    limits: dict[GuardName, float | None] = {
        "error_rate": info.guards.max_error_rate,
        "p99_ms": info.guards.max_p99_ms,
        "accuracy": info.guards.max_accuracy_drop,
    }
    rows = []
    for guard, name in FIGURE_NAMES.items():
        figure = info.figures.get(guard)
        if figure is None:
            off = limits[guard] is None or (guard == "accuracy" and info.min_labels == 0)
            rows.append((name, _limit(guard, limits[guard]), "-", "-", "off" if off else "-"))
            continue
        rows.append(
            (
                name,
                _limit(guard, figure.limit),
                f"{_value(guard, figure.candidate.value)} ({figure.candidate.n})",
                f"{_value(guard, figure.baseline.value)} ({figure.baseline.n})",
                figure.status,
            )
        )
    return rows


def rollout_view(
    info: RolloutInfo, note: str | None = None, *, note_style: str = "yellow"
) -> RenderableType:
    """The human view of a rollout: versions, status, steps, timing, guards, reason, events."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    lines: list[RenderableType] = [
        Text.from_markup(
            f"[bold]{escape(info.model)}[/]: v{info.candidate} (candidate) vs v{info.baseline} "
            f"(baseline), alias {escape(info.alias)}  {_styled(info.status)}"
        ),
        Text.from_markup(f"steps   {_steps_row(info)}  (step {info.step + 1}/{len(info.steps)})"),
        *(Text(line) for line in _timing(info)),
    ]
    table = Table(title="guards", title_justify="left")
    for column in ("guard", "limit", "candidate (n)", "baseline (n)", "status"):
        table.add_column(column, justify="right" if "(n)" in column else "left")
    for name, limit, candidate, baseline, status in guard_rows(info):
        shown = _styled(status) if status != "-" else "-"
        table.add_row(name, limit, candidate, baseline, shown)
    lines.append(table)
    if info.reason:
        lines.append(Text.from_markup(f"[bold]reason[/]  {escape(info.reason)}"))
    if info.events:
        events = Table(
            title=f"events (last {min(SHOWN_EVENTS, len(info.events))} of {len(info.events)})",
            title_justify="left",
            show_header=False,
            box=None,
            padding=(0, 1, 0, 0),
        )
        for event in info.events[-SHOWN_EVENTS:]:
            step = f"step {event.step + 1}" if event.step >= 0 else "-"
            events.add_row(
                _clock(event.at),
                _styled(event.event) if event.event in STATUS_STYLE else event.event,
                step,
                _pct(event.weight),
                escape(event.detail),
            )
        lines.append(events)
    if note:
        lines.append(Text(note, style=note_style))
    return Group(*lines)


def progress_line(info: RolloutInfo) -> str:
    """One line for a log: status, step, weight (or why it ended) and what each guard says."""
    guards = ", ".join(f"{name} {status}" for name, _, _, _, status in guard_rows(info))
    at = f"step {info.step + 1}/{len(info.steps)}"
    if info.status != "running":
        why = f" ({info.reason})" if info.reason else ""
        return f"{info.model}: {info.status.replace('_', ' ')} at {at}{why}; {guards}"
    head = f"{info.model}: running, {at} ({_pct(info.weight)} to v{info.candidate})"
    if info.next_step_in_s is not None:
        head += f", step may end in {duration(info.next_step_in_s)}"
    return f"{head}; {guards}"


def clock_now() -> str:
    from datetime import UTC, datetime

    return _clock(datetime.now(UTC))
