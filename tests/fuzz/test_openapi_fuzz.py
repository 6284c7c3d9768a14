"""Schemathesis against a live `mlserve serve`: every operation of its /openapi.json, with
documented examples, boundary values (coverage phase) and generated valid and invalid inputs,
auth off and on. No 5xx, and every answer is one the schema documents: status code, content
type, body schema and headers; with auth on, a request without the key must be refused.

Schemathesis's own engine (what `st run` uses) drives the run: its pytest integration cannot
load a schema from a fixture on this pytest. Seeded and deterministic, so every run sends the
same requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from support.data import populate
from support.fuzz import assert_clean, run_schema
from support.servers import MlserveProcess, running

from mlserve.keys import KeyStore

# The test extra installs it; without it (a partial install) this module is skipped.
schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("schemathesis.engine")

pytestmark = pytest.mark.slow

SEED = 20240917
MAX_EXAMPLES = 25  # generated cases per operation and mode (~12 s per server on 2 cores)
CHECKS = [
    "not_a_server_error",  # no 5xx at all
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]


@dataclass
class Live:
    proc: MlserveProcess
    headers: dict[str, str]
    auth: bool
    reloads: list[str] = field(default_factory=list)


def _config(live: Live) -> schemathesis.Config:
    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
    # With auth on: the same request without credentials must be refused (401).
    checks["ignored_auth"] = {"enabled": live.auth}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": live.proc.url,
            "headers": live.headers,
            "generation": {
                "mode": "all",  # schema-valid and schema-invalid inputs
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": checks,
            "phases": {"stateful": {"enabled": False}},
        }
    )


@pytest.fixture(scope="module", params=["auth-off", "auth-on"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A real server over sentiment (text) and iris (tabular). With auth on: an admin key made
    in its state directory before it starts, sent with every request, and the prediction
    cache and a (generous) rate limit on, so their code paths are fuzzed too."""
    auth = request.param == "auth-on"
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    populate(root / "registry")
    home = root / "home"
    headers: dict[str, str] = {}
    # watch_interval_s 0: what the fuzzer changes (splits, reloads) stays put between calls.
    config: dict[str, dict[str, Any]] = {"traffic": {"watch_interval_s": 0}}
    if auth:
        key = KeyStore(home / "state" / "keys.json").create(role="admin", name="fuzz").key
        headers = {"Authorization": f"Bearer {key}"}
        config["cache"] = {"enabled": True}
        config["rate_limit"] = {"enabled": True, "rate": 1000, "burst": 10_000}
    with running(root / "registry", home, config=config) as proc:
        yield Live(proc=proc, headers=headers, auth=auth)
        log = proc.output()
    assert "Traceback" not in log, log


def _restore_unloaded(live: Live, schema: Any) -> None:
    """The V2 repository may unload a model (admin): load it back at once, so the rest of the
    run meets a fully serving server (an unloaded model rightly answers 503, which would hide
    every later finding on it). The unload's own answer is checked like any other."""

    @schema.hook
    def after_call(context: Any, case: Any, response: Any) -> None:
        if case.path.endswith("/unload") and response.status_code == 200:
            path = case.formatted_path.removesuffix("unload") + "load"
            answer = httpx.post(live.proc.url + path, headers=live.headers, timeout=30)
            assert answer.status_code == 200, answer.text
            live.reloads.append(path)


def test_every_operation_answers_as_documented(live: Live) -> None:
    schema = schemathesis.openapi.from_url(live.proc.url + "/openapi.json", config=_config(live))
    _restore_unloaded(live, schema)
    run = run_schema(schema)
    assert_clean(run, schema)
    if live.auth:
        assert run.statuses[401] > 0, run.statuses  # ignored_auth did send requests without the key
