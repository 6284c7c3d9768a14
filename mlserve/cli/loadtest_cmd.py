"""`mlserve loadtest`: measure a running server under load and gate on latency, rate, errors."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlserve.cli._client_opts import ApiKeyOpt, TimeoutOpt, UrlOpt
from mlserve.cli._common import ConfigOpt, cli_errors, console, err_console, print_json

if TYPE_CHECKING:
    from mlserve.loadtest import LoadPlan, Progress, RunResult, Target

THRESHOLD_FAILED_EXIT = 99

_TARGET = "Target"
_LOAD = "Load shape"
_GATES = "Gates (exit 99 when one fails)"
_OUTPUT = "Output"


@cli_errors
def loadtest(
    url: UrlOpt = None,
    endpoint: Annotated[
        str,
        typer.Option(
            help="predict (/api/predict), batch (/api/predict/batch), v2 "
            "(/v2/models/NAME/infer) or custom (--path, --method, --body).",
            rich_help_panel=_TARGET,
        ),
    ] = "predict",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model reference sent with each request (name, name:3, name@alias).",
            show_default=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(help="Texts per request for --endpoint batch or v2.", rich_help_panel=_TARGET),
    ] = 1,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Inputs: .txt (a text a line), .csv (--text-column) or .jsonl (request bodies "
            "sent as they are). Default: the bundled sample texts.",
            show_default=False,
            dir_okay=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    text_column: Annotated[
        str, typer.Option(help="Column of a .csv --data file.", rich_help_panel=_TARGET)
    ] = "text",
    path: Annotated[
        str | None,
        typer.Option(
            help="Request path (required for --endpoint custom; overrides the default path).",
            show_default=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="HTTP method for --endpoint custom (default POST with a body, else GET).",
            show_default=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    body: Annotated[
        str | None,
        typer.Option(
            help="JSON body template for --endpoint custom; {{text}} becomes a sample text "
            """(JSON-escaped), e.g. '{"inputs": "{{text}}"}'.""",
            show_default=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="Extra request header 'Name: value' (repeatable).",
            show_default=False,
            rich_help_panel=_TARGET,
        ),
    ] = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Do not verify TLS certificates (https).", rich_help_panel=_TARGET
        ),
    ] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Closed loop: connections, each sending its next request when the last one "
            "is answered (default: loadtest.concurrency setting, 8).",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Open loop: requests per second on a fixed schedule; latency counts from each "
            "request's scheduled start, so a slow server cannot hide its queueing.",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            help="Open loop: most requests in flight (default: one second's worth, 16 to "
            "1000); a request that has to wait for one is sent late and counted.",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration",
            "-d",
            help="How long to measure: 500ms, 30s, 2m or seconds (default: loadtest.duration "
            "setting, 10s; at most 1h).",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests",
            "-n",
            help="Stop after this many measured requests (with --duration: whichever first).",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option(
            help="Load sent first and not measured, e.g. 5s (default: loadtest.warmup, 0).",
            show_default=False,
            rich_help_panel=_LOAD,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            help="Spread the load over this many processes (results merged exactly).",
            rich_help_panel=_LOAD,
        ),
    ] = 1,
    engine: Annotated[
        str,
        typer.Option(
            help="HTTP engine: raw (fast keep-alive HTTP/1.1) or aiohttp (the reference; "
            "needs the aiohttp extra).",
            rich_help_panel=_LOAD,
        ),
    ] = "raw",
    max_p50_ms: Annotated[
        float | None,
        typer.Option(help="Fail when p50 latency exceeds this (ms).", rich_help_panel=_GATES),
    ] = None,
    max_p95_ms: Annotated[
        float | None,
        typer.Option(help="Fail when p95 latency exceeds this (ms).", rich_help_panel=_GATES),
    ] = None,
    max_p99_ms: Annotated[
        float | None,
        typer.Option(help="Fail when p99 latency exceeds this (ms).", rich_help_panel=_GATES),
    ] = None,
    min_rps: Annotated[
        float | None,
        typer.Option(
            help="Fail below this many successful (2xx) requests per second.",
            rich_help_panel=_GATES,
        ),
    ] = None,
    max_error_rate: Annotated[
        float | None,
        typer.Option(
            help="Fail when the share of failed requests (transport errors and non-2xx) "
            "exceeds this fraction (0 to 1).",
            rich_help_panel=_GATES,
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="k6-style gate, repeatable: 'p(95)<200', 'avg<=50', 'max<1000', 'med<20', "
            "'rps>=100', 'error_rate<0.01' (latencies in ms).",
            show_default=False,
            rich_help_panel=_GATES,
        ),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Write the JSON report to FILE ('-': stdout; the human report then goes to "
            "stderr).",
            show_default=False,
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            metavar="FILE",
            help="Write a JUnit XML report: one test case per threshold.",
            show_default=False,
            dir_okay=False,
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No live view and no report; failed thresholds are still named on stderr.",
            rich_help_panel=_OUTPUT,
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Load-test a running server and gate on latency, throughput and errors.

    Exit codes: 0 every threshold holds, 99 one failed (named on stderr),
    1 the target could not be tested at all (unreachable, or not one request succeeded: the
    most common error is named), 2 usage error, 141 (silently) the reader of the report went
    away, as in `mlserve loadtest | head`.
    """
    from mlserve import loadtest as lt
    from mlserve.cli._client_opts import client_settings
    from mlserve.errors import UsageError

    # Everything that can be wrong with the flags is found before any request is sent.
    gates = lt.flag_thresholds(
        max_p50_ms=max_p50_ms,
        max_p95_ms=max_p95_ms,
        max_p99_ms=max_p99_ms,
        min_rps=min_rps,
        max_error_rate=max_error_rate,
    )
    gates += [lt.parse_threshold(text) for text in threshold or []]
    duration_s = lt.parse_duration(duration) if duration is not None else None
    warmup_s = lt.parse_duration(warmup, option="--warmup") if warmup is not None else None
    if rate is not None and concurrency is not None:
        raise UsageError(
            "--rate (open loop) and --concurrency (closed loop) exclude each other; "
            "bound an open loop with --max-in-flight"
        )
    if max_in_flight is not None and rate is None:
        raise UsageError("--max-in-flight only applies with --rate")
    if not 1 <= processes <= lt.MAX_PROCESSES:
        raise UsageError(f"invalid --processes {processes}: use 1 to {lt.MAX_PROCESSES}")
    headers = [lt.parse_header(h) for h in header or []]
    for out, flag in ((json_out, "--json"), (junit, "--junit")):
        # A report that cannot be written is found now, not after the run.
        if out is not None and out != "-" and not Path(out).parent.is_dir():
            raise UsageError(f"{flag} {out}: the folder {Path(out).parent} does not exist")
    if url is not None:
        lt.check_url(url)

    settings = client_settings(
        config,
        url,
        api_key,
        timeout,
        loadtest={"concurrency": concurrency, "duration": duration_s, "warmup": warmup_s},
    )
    key = settings.client.api_key.get_secret_value() if settings.client.api_key else None
    target = lt.build_target(
        url=settings.client.url,
        endpoint=endpoint,
        payloads=lt.load_payloads(data, text_column=text_column),
        model=model,
        batch_size=batch_size,
        path=path,
        method=method,
        body_template=body,
        headers=headers,
        api_key=key,
    )
    if duration_s is None and requests is None:
        duration_s = settings.loadtest.duration
    conc = settings.loadtest.concurrency
    in_flight = 0
    if rate is not None:
        in_flight = max_in_flight or min(1000, max(16, math.ceil(rate)))
    plan = lt.LoadPlan(
        concurrency=conc,
        rate=rate,
        max_in_flight=in_flight,
        duration=duration_s,
        requests=requests,
        warmup=settings.loadtest.warmup,
        timeout=settings.client.timeout,
        engine=_engine(engine),
        insecure=insecure,
    ).validate()
    if rate is None and processes > conc:
        raise UsageError(f"--processes {processes} is more than --concurrency {conc}")

    report_console = err_console if json_out == "-" else console
    live_enabled = not quiet and err_console.is_terminal

    lt.preflight(target, plan)
    result = _run(target, plan, processes, live=live_enabled)
    summary = lt.summarize(result, gates)

    if json_out is not None:
        report = lt.report_dict(summary, target=target, plan=plan, processes=processes)
        if json_out == "-":
            print_json(report)
        else:
            import json

            lt.write_text(Path(json_out), (json.dumps(report, indent=2) + "\n").encode())
    if junit is not None:
        lt.write_text(junit, lt.junit_xml(summary, target=target))
    if not quiet:
        from mlserve.cli.loadtest_view import render_report

        render_report(
            summary, target=target, plan=plan, processes=processes, console=report_console
        )
    if result.interrupted:
        err_console.print("[bold red]error:[/] interrupted", highlight=False)
        raise typer.Exit(130)
    lt.ensure_ok(result, target)
    failed = lt.failure_lines(summary)
    if failed:
        from rich.markup import escape

        for line in failed:
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
        raise typer.Exit(THRESHOLD_FAILED_EXIT)
    lt.ensure_some_success(result, target)  # errors only, and no gate said so: exit 1


def _engine(name: str) -> str:
    """The engine named, checked before any request: aiohttp is an extra (exit 2 without it)."""
    from mlserve.errors import UsageError
    from mlserve.loadtest.engines import require_engine

    if name not in ("raw", "aiohttp"):
        raise UsageError(f"invalid --engine '{name}': use raw or aiohttp")
    require_engine(name)
    return name


def _run(target: Target, plan: LoadPlan, processes: int, *, live: bool) -> RunResult:
    from mlserve import loadtest as lt

    if not live:
        return lt.run_load(target, plan, processes=processes)
    from rich.live import Live

    from mlserve.cli.loadtest_view import LiveView

    view = LiveView(processes=processes)
    last = [0.0]
    with Live(view.render(), console=err_console, transient=True, auto_refresh=False) as display:

        def on_progress(index: int, progress: Progress) -> None:
            view.update(index, progress)
            now = time.monotonic()
            if now - last[0] >= 0.25:
                last[0] = now
                display.update(view.render(), refresh=True)

        return lt.run_load(target, plan, processes=processes, on_progress=on_progress)
