"""Schemathesis with every check (what `st run --checks all` runs) against a real `mlserve
serve` with its defaults: auth off, V2 model control off. Every answer is one the OpenAPI schema
documents; every request the schema allows is accepted and every one it forbids is refused (so
the schema says what the server enforces); an undeclared method gets 405 with an Allow header
naming every method of the path. What is left out, and why, is listed below (and uvicorn's own
400 for broken HTTP framing, in support/fuzz.py): nothing else may fail.

Bounded: a few examples per operation and phase and a few stateful steps, seeded and
deterministic (one run takes about a minute on 2 cores). tests/fuzz/test_openapi_fuzz.py fuzzes
longer, auth on and off, with the answer checks only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.data import populate
from support.fuzz import assert_clean, documented_operations, run_schema
from support.servers import MlserveProcess, running

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("schemathesis.engine")

pytestmark = pytest.mark.slow

SEED = 20250117
MAX_EXAMPLES = 15  # per operation and phase
# Every check `st run --checks all` runs (max_response_time needs a limit: none is set).
ALL_CHECKS = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
}

# Checks not run at all.
EXCLUDED_CHECKS = {
    "ignored_auth": "auth is off here, while the schema documents the credentials every "
    "route needs once a key exists (auth turns on without a restart); test_openapi_fuzz.py "
    "runs this check with auth on",
}
# Checks not run on some operations: (method, path) -> {check: reason}.
MODEL_DEPENDENT = (
    "whether an input fits depends on the model it reaches (text or features, the number of "
    "features, its outputs), which one schema for every model cannot say: a schema-valid "
    "request may rightly get 422 (V2: 400)"
)
CANCELLED = (
    "DELETE of a pending or running job cancels it and keeps it (status cancelled, readable "
    "until jobs.ttl_s); only a finished job is deleted, and then GET answers 404 "
    "(tests/server/test_jobs.py)"
)
EXCLUDED_ON: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/api/predict"): {"positive_data_acceptance": MODEL_DEPENDENT},
    ("POST", "/api/predict/batch"): {"positive_data_acceptance": MODEL_DEPENDENT},
    ("POST", "/api/predict/async"): {
        "positive_data_acceptance": MODEL_DEPENDENT + "; and an uploaded file must be .jsonl "
        "or .csv (415), which multipart/form-data's schema cannot say"
    },
    ("POST", "/v2/models/{name}/infer"): {"positive_data_acceptance": MODEL_DEPENDENT},
    ("POST", "/v2/models/{name}/versions/{version}/infer"): {
        "positive_data_acceptance": MODEL_DEPENDENT
    },
    # use_after_free: a read after a successful DELETE of the same path must be a 404.
    ("GET", "/api/models/{name}/traffic"): {
        "use_after_free": "DELETE resets the model's split and shadow, it does not remove the "
        "model: GET then answers its traffic without them"
    },
    ("GET", "/api/jobs/{job_id}"): {"use_after_free": CANCELLED},
    ("GET", "/api/predict/async/{job_id}"): {"use_after_free": CANCELLED},
}


def _config(url: str) -> Any:
    checks: dict[str, Any] = {"enabled": True}
    checks.update({name: {"enabled": False} for name in EXCLUDED_CHECKS})
    operations = [
        {
            "include-method": method,
            "include-path": path,
            "checks": {name: {"enabled": False} for name in excluded},
        }
        for (method, path), excluded in EXCLUDED_ON.items()
    ]
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": url,
            "generation": {
                "mode": "all",  # schema-valid and schema-invalid inputs
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": checks,
            "operations": operations,
            "phases": {"stateful": {"enabled": True, "max-steps": 30}},
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlserveProcess]:
    """`mlserve serve` with default settings over sentiment (text) and iris (tabular)."""
    root: Path = tmp_path_factory.mktemp("conformance")
    populate(root / "registry")
    with running(root / "registry", root / "home") as proc:
        yield proc
        log = proc.output()
    assert "Traceback" not in log, log


def test_every_check_passes_against_the_default_server(server: MlserveProcess) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=_config(server.url))
    run = run_schema(schema)
    assert_clean(run, schema)
    assert set(run.checks_run) == ALL_CHECKS - set(EXCLUDED_CHECKS), run.checks_run
    assert {f"{m} {p}" for m, p in EXCLUDED_ON} <= documented_operations(schema)  # none stale
    assert run.statuses[405] > 0, run.statuses  # the undeclared-method checks ran
