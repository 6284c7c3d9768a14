"""Running schemathesis' engine over a schema and collecting what the fuzz tests assert on."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemathesis import engine
from schemathesis.engine import events

# Answers that are not the application's: uvicorn's HTTP parser refuses a request whose
# framing is broken (schemathesis' negative mode can send e.g. `Transfer-Encoding: <junk>`)
# with a plain-text 400 before any route runs, so no operation's schema can document it.
HTTP_PARSER_REFUSAL = b"Invalid HTTP request received."


@dataclass
class FuzzRun:
    """Findings (one text each, deduplicated), engine errors, answer statuses, the operations
    exercised, the checks run, and the engine's final event."""

    findings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    operations: set[str] = field(default_factory=set)
    checks_run: collections.Counter[str] = field(default_factory=collections.Counter)
    finished: Any = None


def is_parser_refusal(response: Any) -> bool:
    return (
        response is not None
        and response.status_code == 400
        and (response.content == HTTP_PARSER_REFUSAL)
    )


def _findings(recorder: Any, ignore: Callable[[Any], bool]) -> Iterator[str]:
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status == engine.Status.FAILURE and check.failure_info is not None:
                info = check.failure_info
                response = recorder.find_response(case_id=case_id)
                if ignore(response):
                    continue
                body = response.content[:500] if response is not None else b""
                yield (
                    f"{recorder.label}: {check.name}: {info.failure.title}\n"
                    f"{info.failure.message}\n{info.code_sample}\n{body!r}"
                )


def run_schema(schema: Any, *, ignore: Callable[[Any], bool] = is_parser_refusal) -> FuzzRun:
    """Run every phase configured on `schema`; findings whose response `ignore` accepts are
    left out."""
    run = FuzzRun()
    findings: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            run.operations.add(recorder.label)
            for case_id in recorder.cases:
                response = recorder.find_response(case_id=case_id)
                if response is not None:
                    run.statuses[response.status_code] += 1
            findings.extend(_findings(recorder, ignore))
            for checks in recorder.checks.values():
                run.checks_run.update(check.name for check in checks)
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            run.finished = event
    run.findings = list(dict.fromkeys(findings))
    return run


def documented_operations(schema: Any) -> set[str]:
    """ "METHOD /path" of every operation the schema documents."""
    return {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }


def assert_clean(run: FuzzRun, schema: Any) -> None:
    """No finding, no engine error, a completed run over every documented operation, real
    answers (200s) and no server error."""
    assert not run.findings, f"{len(run.findings)} findings:\n\n" + "\n\n".join(run.findings[:10])
    assert not run.errors, run.errors
    assert run.finished is not None and run.finished.stop_reason == "completed"
    documented = documented_operations(schema)
    assert documented <= run.operations, documented - run.operations
    assert run.statuses[200] > 100, run.statuses
    assert not any(status >= 500 for status in run.statuses), run.statuses
