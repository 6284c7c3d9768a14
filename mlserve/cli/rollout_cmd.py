"""`mlserve rollout`: start, follow and abort a model's canary rollout on a running server."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt, client_settings, make_client
from mlserve.cli._common import (
    ConfigOpt,
    JsonOpt,
    cli_errors,
    console,
    err_console,
    fail,
    print_json,
)
from mlserve.cli.rollout_view import (
    clock_now,
    duration,
    progress_line,
    rollout_view,
)

if TYPE_CHECKING:
    from mlserve.client import Client
    from mlserve.schemas.rollouts import RolloutInfo, RolloutRequest

app = typer.Typer(
    help="Start, follow and abort canary rollouts: a growing share of a model's traffic goes "
    "to a new version, judged against the current one; promoted at the end, rolled back on a "
    "breach.",
    no_args_is_help=True,
)

# `--guard NAME=VALUE`: the CLI's names for the schema's guard fields.
GUARD_FIELDS = {
    "error-rate": "max_error_rate",
    "p99-ms": "max_p99_ms",
    "accuracy-drop": "max_accuracy_drop",
}
# The flags that set each RolloutRequest field (validation errors name the flag).
FLAGS = {
    "candidate": "--candidate",
    "alias": "--alias",
    "steps": "--steps",
    "step_seconds": "--step-seconds",
    "min_requests": "--min-requests",
    "min_labels": "--min-labels",
}

# Exit codes of `status --wait` besides 0 (promoted) and 1 (rolled back, aborted or an error):
# still running at --timeout, as timeout(1) exits; interrupted, as a shell reports SIGINT.
EXIT_TIMED_OUT = 124
EXIT_INTERRUPTED = 130
# --wait/--watch without --timeout give up after this long (a CI job's usual limit): a step
# also waits for its minimum samples, so a rollout without traffic would never end.
DEFAULT_FOLLOW_S = 6 * 3600.0
# While following, the server may be out of reach this long (a restart, a deploy) before the
# command gives up; the first request is never retried, so a wrong --url fails at once.
OUTAGE_S = 60.0
# Each request while following waits at most what is left until the deadline, but never less.
MIN_REQUEST_TIMEOUT_S = 0.5

NameArg = Annotated[str, typer.Argument(help="Model name.", show_default=False)]


def _usage(message: str) -> Exception:
    from mlserve.errors import UsageError

    return UsageError(message)


def _check_name(name: str) -> str:
    from mlserve.registry import validate_name

    return validate_name(name)


# ---------------------------------------------------------------------------- parsing flags
def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _usage(f"{what}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise _usage(f"{what}: '{text}' is not a finite number")
    return value


def parse_steps(text: str) -> list[float]:
    """'5,25,50,100' -> [5.0, 25.0, 50.0, 100.0] (percent; a trailing % is allowed)."""
    parts = [p.strip().removesuffix("%").strip() for p in text.split(",")]
    if not any(parts):
        raise _usage("--steps: give percentages separated by commas, e.g. 5,25,50,100")
    if not all(parts):
        raise _usage(f"--steps: '{text}' has an empty step")
    return [_number(p, "--steps") for p in parts]


def parse_guards(items: list[str]) -> dict[str, float | None]:
    """['p99-ms=250', 'error-rate=off'] -> {'max_p99_ms': 250.0, 'max_error_rate': None};
    a guard given twice takes its last value."""
    guards: dict[str, float | None] = {}
    known = ", ".join(GUARD_FIELDS)
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise _usage(f"--guard '{item}': expected NAME=VALUE or NAME=off ({known})")
        field = GUARD_FIELDS.get(name.lower())
        if field is None:
            raise _usage(f"--guard '{item}': unknown guard '{name}' (one of {known})")
        guards[field] = None if value.lower() == "off" else _number(value, f"--guard {name}")
    return guards


def _flag_of(loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "guards":
        names = {v: k for k, v in GUARD_FIELDS.items()}
        return f"--guard {names.get(str(loc[1]), loc[1])}"
    return FLAGS.get(str(loc[0]), str(loc[0])) if loc else "request"


def build_request(values: dict[str, Any]) -> RolloutRequest:
    """A RolloutRequest from the flags given (None: not given, so the server's default holds);
    invalid values are a usage error naming the flag."""
    from pydantic import ValidationError

    from mlserve.schemas.rollouts import RolloutRequest

    given = {k: v for k, v in values.items() if v is not None}
    try:
        return RolloutRequest.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _usage(f"{_flag_of(tuple(first['loc']))}: {message}") from None


def _output(info: RolloutInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.model_dump(mode="json"))
    else:
        console.print(rollout_view(info))


# ---------------------------------------------------------------------------- following
@dataclass(slots=True)
class Followed:
    """How following ended: the last rollout seen, and whether it ended before the deadline."""

    info: RolloutInfo
    ended: bool


def _transient(exc: Exception) -> bool:
    from mlserve.errors import ServerResponseError, ServerUnreachableError

    if isinstance(exc, ServerUnreachableError):
        return True
    # Rate limited, or a proxy / the rollout store briefly down: worth another poll.
    return isinstance(exc, ServerResponseError) and exc.status_code in (429, 502, 503, 504)


def follow(
    fetch: Callable[[float], RolloutInfo],
    *,
    interval: float,
    limit: float,
    show: Callable[[RolloutInfo, str | None], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Followed:
    """Poll `fetch(seconds left)` every `interval` until the rollout ends or `limit` seconds
    pass. A server out of reach (or answering 429, 502-504) is retried for up to OUTAGE_S, except
    at the first request; a different rollout id means ours was replaced: an error."""
    from mlserve.errors import MlserveError, ServerResponseError

    deadline = clock() + limit
    info = fetch(limit)
    show(info, None)
    failing_since: float | None = None
    while info.status == "running":
        left = deadline - clock()
        if left <= 0:
            return Followed(info=info, ended=False)
        sleep(min(interval, left))
        try:
            latest = fetch(max(deadline - clock(), MIN_REQUEST_TIMEOUT_S))
        except MlserveError as exc:
            now = clock()
            failing_since = now if failing_since is None else failing_since
            if not _transient(exc) or now - failing_since >= OUTAGE_S:
                raise
            show(info, f"{exc.message}; retrying (gives up after {OUTAGE_S:g}s)")
            continue
        failing_since = None
        if latest.id != info.id:
            raise ServerResponseError(
                f"rollout {info.id} of {info.model} is no longer the latest: rollout "
                f"{latest.id} ({latest.status}) replaced it",
                status=409,
                code="rollout_replaced",
            )
        info = latest
        show(info, None)
    return Followed(info=info, ended=True)


def _follow_with(
    client: Client,
    http: Any,
    name: str,
    *,
    request_timeout: float,
    interval: float,
    limit: float,
    live: bool,
) -> Followed:
    """Follow the rollout with a line per change on stderr, or a live view (`live`); each
    request's timeout is cut to what is left until the deadline."""
    import httpx

    def fetch(left: float) -> RolloutInfo:
        http.timeout = httpx.Timeout(min(request_timeout, max(left, MIN_REQUEST_TIMEOUT_S)))
        return client.rollout(name)

    if not live:
        last: list[str] = []

        def log(info: RolloutInfo, note: str | None) -> None:
            line = note or progress_line(info)
            if line not in last:  # one line per change, not per poll
                err_console.print(f"{clock_now()} {line}", markup=False)
                last[:] = [line]

        return follow(fetch, interval=interval, limit=limit, show=log)

    from rich.live import Live

    with Live(console=console, auto_refresh=False, transient=False) as view:

        def draw(info: RolloutInfo, note: str | None) -> None:
            if note is None:
                footer = f"updated {clock_now()}, every {interval:g}s; Ctrl-C to stop"
                view.update(rollout_view(info, footer, note_style="dim"), refresh=True)
            else:  # the server is out of reach: the last view, with why
                view.update(rollout_view(info, note), refresh=True)

        return follow(fetch, interval=interval, limit=limit, show=draw)


# ---------------------------------------------------------------------------- commands
@app.command("start")
@cli_errors
def start(
    name: NameArg,
    candidate: Annotated[
        int, typer.Option("--candidate", help="The version to release.", show_default=False)
    ],
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="The candidate's share of traffic at each step, percent (sorted; a last "
            "step of 100 is added). Default: 5,25,50,100.",
            show_default=False,
        ),
    ] = None,
    step_seconds: Annotated[
        float | None,
        typer.Option(
            "--step-seconds",
            help="How long each step lasts at least. Default: 300.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    min_requests: Annotated[
        int | None,
        typer.Option(
            "--min-requests",
            help="Candidate predictions a step needs before the error and latency guards judge "
            "it and before it may end. Default: 200.",
            show_default=False,
        ),
    ] = None,
    min_labels: Annotated[
        int | None,
        typer.Option(
            "--min-labels",
            help="Feedback labels each version needs before the accuracy guard judges; "
            "0 (default): no accuracy guard.",
            show_default=False,
        ),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            "--alias",
            help="The alias whose version is the baseline, moved to the candidate at the end. "
            "Default: the server's default alias (production).",
            show_default=False,
        ),
    ] = None,
    guard: Annotated[
        list[str] | None,
        typer.Option(
            "--guard",
            metavar="NAME=VALUE",
            help="A limit the candidate is held to, repeatable: error-rate=0.01 (share of "
            "failed predictions), p99-ms=250, accuracy-drop=0.02; NAME=off turns one off. "
            "Default: error-rate=0.01, accuracy-drop=0.02, p99-ms off.",
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a canary rollout of a new version (needs an admin key).

    The candidate gets a growing share of the model's traffic, step by step,
    judged against the version the alias names now: a breached guard rolls it
    back; after the last step (100 %) the alias moves to the candidate.

    Exit codes: 0 started; 1 refused by the server (409: a rollout is running
    or a manual A/B split is set; 404: unknown model or version) or server
    unreachable; 2 invalid flags.

    Example: mlserve rollout start iris --candidate 2 --guard p99-ms=250
    """
    _check_name(name)
    request = build_request(
        {
            "candidate": candidate,
            "alias": alias,
            "steps": parse_steps(steps) if steps is not None else None,
            "step_seconds": step_seconds,
            "min_requests": min_requests,
            "min_labels": min_labels,
            "guards": parse_guards(guard) if guard else None,
        }
    )
    settings = client_settings(config, url, api_key, timeout)
    with make_client(settings) as client:
        info = client.start_rollout(name, request)
    _output(info, as_json)
    err_console.print(
        f"started rollout {info.id} of {info.model}; follow it with "
        f"`mlserve rollout status {info.model} --watch`",
        markup=False,
    )


@app.command("status")
@cli_errors
def status(
    name: NameArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Redraw the view every --interval until the rollout ends (Ctrl-C: stop).",
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Block until the rollout ends; exit 0 if promoted, 1 if rolled back or aborted, "
            f"{EXIT_TIMED_OUT} if still running at --timeout.",
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", help="Seconds between polls with --watch/--wait.", min=0.1),
    ] = 2.0,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the answer (default 10); with --wait/--watch, for the "
            f"rollout to end (default {DEFAULT_FOLLOW_S / 3600:g} h), each request then waiting "
            "at most the client.timeout setting.",
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's running (or latest) rollout: steps, weight, guards, events.

    --watch redraws the view until the rollout ends (in a terminal; elsewhere
    it logs a line per change to stderr, then prints the final view).
    --wait blocks until the rollout ends, for CI pipelines; the two combine.

    Exit codes: 0 shown (with --wait: promoted);
    1 rolled back or aborted (with --wait), no rollout (404), unreachable;
    2 invalid flags; 124 still running at --timeout (--wait, --watch);
    130 interrupted (Ctrl-C).

    Example (CI): mlserve rollout status iris --wait --timeout 3600 --json
    """
    _check_name(name)
    following = watch or wait
    if watch and as_json:
        raise _usage("--watch draws a live view; for JSON use --wait --json (the final state)")
    if timeout is not None and timeout <= 0:
        raise _usage("--timeout must be positive")
    settings = client_settings(config, url, api_key, None if following else timeout)
    if not following:
        with make_client(settings) as client:
            info = client.rollout(name)
        _output(info, as_json)
        return
    limit = timeout if timeout is not None else DEFAULT_FOLLOW_S
    live = watch and console.is_terminal
    import httpx

    from mlserve.client import Client

    key = settings.client.api_key.get_secret_value() if settings.client.api_key else None
    try:
        with httpx.Client(base_url=settings.client.url, timeout=settings.client.timeout) as http:
            client = Client(settings.client.url, api_key=key, http=http)
            done = _follow_with(
                client,
                http,
                name,
                request_timeout=settings.client.timeout,
                interval=interval,
                limit=limit,
                live=live,
            )
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None  # quietly: the user asked to stop
    info = done.info
    if not live:
        _output(info, as_json)
    if not done.ended:
        from rich.markup import escape

        raise fail(
            escape(f"the rollout is still running after {duration(limit)}: {progress_line(info)}"),
            EXIT_TIMED_OUT,
        )
    if wait and info.status != "promoted":
        why = f": {info.reason}" if info.reason else ""
        err_console.print(
            f"rollout of {info.model} {info.status.replace('_', ' ')}{why}", markup=False
        )
        raise typer.Exit(1)


@app.command("abort")
@cli_errors
def abort(
    name: NameArg,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Abort a model's running rollout: the baseline gets all traffic back (admin key).

    Exit codes: 0 aborted; 1 no rollout (404), the latest one already ended
    (409) or server unreachable; 2 invalid flags.
    """
    _check_name(name)
    settings = client_settings(config, url, api_key, timeout)
    with make_client(settings) as client:
        info = client.abort_rollout(name)
    _output(info, as_json)
    err_console.print(
        f"aborted rollout {info.id} of {info.model}: {info.alias} stays on v{info.baseline}",
        markup=False,
    )
