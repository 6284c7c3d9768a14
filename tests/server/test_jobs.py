"""Async jobs over HTTP: submit (JSON or a file), poll, page or stream results, cancel, delete."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from mlserve.registry import Registry
from mlserve.schemas import ModelMetadata

from . import broken_models
from .conftest import IRIS_FEATURES, error_of
from .jobs_helpers import FINISHED, FLOWERS, TEXTS, WAIT_S, submit, wait_for

JSON = {"content-type": "application/json"}


def all_results(client: TestClient, job_id: str) -> list[Any]:
    response = client.get(f"/api/jobs/{job_id}/result", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_offset"] is None
    return list(body["predictions"])


def batch(client: TestClient, **payload: Any) -> list[Any]:
    response = client.post("/api/predict/batch", json=payload)
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def assert_same(got: list[Any], expected: list[Any]) -> None:
    """Same predictions in the same order; probabilities equal up to float rounding (a
    vectorized call over a chunk of another size may differ in the last bits)."""
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["confidence"] == pytest.approx(e["confidence"], abs=1e-12)
        if e["probabilities"] is None:
            assert g["probabilities"] is None
        else:
            assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-12)


def jobs_in_db(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


@pytest.fixture
def small_chunks(all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]) -> Any:
    """A server over the four models whose jobs run in chunks of 2 inputs."""
    return serve(raise_server_exceptions=False, jobs={"chunk_size": 2})


@pytest.fixture
def idle(all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]) -> Any:
    """A server that accepts jobs but never runs them (jobs.concurrency = 0)."""
    return serve(raise_server_exceptions=False, jobs={"concurrency": 0})


# ---------------------------------------------------------------------------- submit and poll
def test_a_text_batch_job_completes_with_the_batch_endpoints_answers_in_order(
    small_chunks: TestClient, text_meta: ModelMetadata
) -> None:
    accepted = small_chunks.post("/api/predict/async", json={"texts": TEXTS, "model": "sentiment"})

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    job_id = body["job_id"]
    assert len(job_id) == 32
    assert body["status"] == "pending"
    assert body["status_url"] == f"/api/jobs/{job_id}"
    assert body["result_url"] == f"/api/jobs/{job_id}/result"
    assert accepted.headers["location"] == body["status_url"]
    assert (body["model"], body["version"], body["total"]) == (
        "sentiment", text_meta.version, len(TEXTS),
    )  # fmt: skip
    status = wait_for(small_chunks, job_id)
    assert status["status"] == "completed", status
    assert status["progress"] == {"done": len(TEXTS), "total": len(TEXTS)}
    assert status["error"] is None
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    assert status["finished_at"] < status["expires_at"]
    assert_same(
        all_results(small_chunks, job_id), batch(small_chunks, texts=TEXTS, model="sentiment")
    )


def test_a_records_job_takes_lists_and_objects_like_the_batch_endpoint(
    small_chunks: TestClient,
) -> None:
    records: list[Any] = [
        dict(zip(IRIS_FEATURES, r, strict=True)) if i % 2 else r for i, r in enumerate(FLOWERS)
    ]

    job = submit(small_chunks, json={"records": records, "model": "iris"})

    assert wait_for(small_chunks, job["job_id"])["status"] == "completed"
    got = all_results(small_chunks, job["job_id"])
    assert_same(got, batch(small_chunks, records=records, model="iris"))
    assert len({p["prediction"] for p in got}) == 3


@pytest.mark.parametrize(
    ("payload", "endpoint_payload"),
    [
        ({"text": TEXTS[2], "model": "sentiment"}, {"text": TEXTS[2], "model": "sentiment"}),
        ({"features": FLOWERS[1], "model": "iris"}, {"features": FLOWERS[1], "model": "iris"}),
    ],
)
def test_a_single_input_job_answers_like_the_predict_endpoint(
    client: TestClient, payload: dict[str, Any], endpoint_payload: dict[str, Any]
) -> None:
    job = submit(client, json=payload)
    assert job["total"] == 1

    assert wait_for(client, job["job_id"])["status"] == "completed"
    [item] = all_results(client, job["job_id"])
    direct = client.post("/api/predict", json=endpoint_payload).json()
    assert_same([item], [direct])


def test_a_regression_job_reports_values_and_null_confidence(client: TestClient) -> None:
    rows = [f[:3] for f in FLOWERS]
    job = submit(client, json={"records": rows, "model": "petal"})

    wait_for(client, job["job_id"])
    results = all_results(client, job["job_id"])
    assert_same(results, batch(client, records=rows, model="petal"))
    assert all(r["confidence"] is None and r["probabilities"] is None for r in results)


def test_a_jsonl_upload_is_scored_line_by_line(small_chunks: TestClient) -> None:
    lines = [orjson.dumps({"features": f}) for f in FLOWERS]
    data = b"\n".join(lines[:2]) + b"\n\n" + b"\n".join(lines[2:]) + b"\n"  # blank lines skipped

    job = submit(
        small_chunks,
        files={"file": ("flowers.jsonl", data, "application/octet-stream")},
        data={"model": "iris"},
    )

    assert job["total"] == len(FLOWERS)
    wait_for(small_chunks, job["job_id"])
    assert_same(
        all_results(small_chunks, job["job_id"]),
        batch(small_chunks, records=FLOWERS, model="iris"),
    )


def test_a_jsonl_text_may_hold_unicode_line_separators(client: TestClient) -> None:
    texts = ["odd\u2028separator", "next\u0085line", "plain"]
    data = b"\n".join(orjson.dumps({"text": t}) for t in texts)

    job = submit(client, files={"file": ("t.ndjson", data)}, data={"model": "sentiment"})

    assert job["total"] == 3
    wait_for(client, job["job_id"])
    assert_same(all_results(client, job["job_id"]), batch(client, texts=texts, model="sentiment"))


def test_a_csv_upload_of_texts_uses_the_text_column(client: TestClient) -> None:
    csv_text = "id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS))

    job = submit(
        client,
        files={"file": ("reviews.csv", csv_text.encode(), "text/csv")},
        data={"model": "sentiment"},
    )

    assert job["total"] == len(TEXTS)
    wait_for(client, job["job_id"])
    assert_same(all_results(client, job["job_id"]), batch(client, texts=TEXTS, model="sentiment"))


def test_a_csv_upload_of_features_maps_columns_by_name(client: TestClient) -> None:
    # Columns in another order than the model's, plus a column the model does not use; a BOM.
    header = ["petal_width", "label", "sepal_length", "petal_length", "sepal_width"]
    rows = [dict(zip(IRIS_FEATURES, f, strict=True)) | {"label": "?"} for f in FLOWERS]
    body = ",".join(header) + "\r\n"
    body += "".join(",".join(str(r[c]) for c in header) + "\r\n" for r in rows)

    job = submit(
        client,
        files={"file": ("flowers.csv", b"\xef\xbb\xbf" + body.encode())},
        data={"model": "iris"},
    )

    wait_for(client, job["job_id"])
    assert_same(all_results(client, job["job_id"]), batch(client, records=FLOWERS, model="iris"))


def test_a_job_submitted_to_one_app_is_run_by_another_sharing_the_store(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    accepting = serve(jobs={"concurrency": 0})
    working = serve(jobs={"concurrency": 2})

    job = submit(accepting, json={"texts": TEXTS, "model": "sentiment"})

    assert wait_for(accepting, job["job_id"])["status"] == "completed"
    assert all_results(accepting, job["job_id"]) == all_results(working, job["job_id"])


# ---------------------------------------------------------------------------- results
def test_results_page_with_next_offset(small_chunks: TestClient) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(11)]
    job = submit(small_chunks, json={"texts": texts, "model": "sentiment"})
    wait_for(small_chunks, job["job_id"])
    expected = batch(small_chunks, texts=texts, model="sentiment")

    pages: list[Any] = []
    offsets = []
    offset: int | None = 0
    while offset is not None:
        response = small_chunks.get(
            f"/api/jobs/{job['job_id']}/result", params={"offset": offset, "limit": 3}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["job_id"], page["total"], page["limit"]) == (job["job_id"], 11, 3)
        assert page["offset"] == offset
        offsets.append(offset)
        pages.extend(page["predictions"])
        offset = page["next_offset"]

    assert offsets == [0, 3, 6, 9]
    assert_same(pages, expected)


def test_results_stream_as_json_lines(small_chunks: TestClient) -> None:
    job = submit(small_chunks, json={"texts": TEXTS, "model": "sentiment"})
    wait_for(small_chunks, job["job_id"])
    expected = batch(small_chunks, texts=TEXTS, model="sentiment")
    url = f"/api/jobs/{job['job_id']}/result"

    by_header = small_chunks.get(url, headers={"Accept": "application/x-ndjson"})
    by_query = small_chunks.get(url, params={"format": "jsonl", "offset": 3})
    limited = small_chunks.get(url, params={"format": "jsonl", "offset": 1, "limit": 3})

    assert by_header.status_code == 200, by_header.text
    assert by_header.headers["content-type"].startswith("application/x-ndjson")
    assert by_header.headers["x-job-total"] == str(len(TEXTS))
    assert by_header.text.endswith("\n")
    assert_same([orjson.loads(line) for line in by_header.text.splitlines()], expected)
    assert_same([orjson.loads(line) for line in by_query.text.splitlines()], expected[3:])
    assert_same([orjson.loads(line) for line in limited.text.splitlines()], expected[1:4])


def test_results_before_completion_are_409(idle: TestClient) -> None:
    job = submit(idle, json={"texts": TEXTS, "model": "sentiment"})

    paged = idle.get(f"/api/jobs/{job['job_id']}/result")
    streamed = idle.get(f"/api/jobs/{job['job_id']}/result?format=jsonl")

    assert "pending" in error_of(paged, 409, "job_not_completed")["message"]
    error_of(streamed, 409, "job_not_completed")
    assert idle.get(f"/api/jobs/{job['job_id']}").json()["progress"] == {
        "done": 0, "total": len(TEXTS),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs/{id}"),
        ("GET", "/api/predict/async/{id}"),
        ("GET", "/api/jobs/{id}/result"),
        ("GET", "/api/jobs/{id}/result?format=jsonl"),
        ("DELETE", "/api/jobs/{id}"),
    ],
)
def test_unknown_jobs_are_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path.format(id=uuid.uuid4().hex))
    error_of(response, 404, "job_not_found")


def test_the_old_status_path_is_an_alias(client: TestClient) -> None:
    job = submit(client, json={"texts": TEXTS, "model": "sentiment"})
    wait_for(client, job["job_id"])

    alias = client.get(f"/api/predict/async/{job['job_id']}")

    assert alias.status_code == 200
    assert alias.json() == client.get(f"/api/jobs/{job['job_id']}").json()


# ---------------------------------------------------------------------------- cancel and delete
def test_delete_cancels_a_pending_job_then_removes_it(idle: TestClient) -> None:
    job = submit(idle, json={"texts": TEXTS, "model": "sentiment"})
    url = f"/api/jobs/{job['job_id']}"

    cancelled = idle.delete(url)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert idle.get(url).json()["status"] == "cancelled"
    error_of(idle.get(f"{url}/result"), 409, "job_not_completed")
    removed = idle.delete(url)
    assert removed.status_code == 204
    assert removed.content == b""
    error_of(idle.get(url), 404, "job_not_found")


def test_delete_removes_a_completed_job_and_its_results(client: TestClient) -> None:
    job = submit(client, json={"texts": TEXTS, "model": "sentiment"})
    wait_for(client, job["job_id"])

    assert client.delete(f"/api/jobs/{job['job_id']}").status_code == 204

    error_of(client.get(f"/api/jobs/{job['job_id']}/result"), 404, "job_not_found")


def test_cancelling_a_running_job_stores_no_more_results(
    registry: Registry,
    gated_estimator: Callable[[str], Any],
    iris_estimator: Any,
    gate: tuple[str, broken_models.Gate],
    serve: Callable[..., TestClient],
) -> None:
    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="gated", feature_names=IRIS_FEATURES, check=False
    )
    registry.register_estimator(iris_estimator, name="iris", feature_names=IRIS_FEATURES)
    client = serve(jobs={"chunk_size": 2})
    held.entered.clear()
    job = submit(client, json={"records": FLOWERS, "model": "gated"})
    assert held.entered.wait(WAIT_S)  # the first chunk is in the model
    assert client.get(f"/api/jobs/{job['job_id']}").json()["status"] == "running"

    cancelled = client.delete(f"/api/jobs/{job['job_id']}")
    held.release.set()
    # One runner loop: once it has finished a later job, it is done with the cancelled one.
    later = submit(client, json={"records": FLOWERS, "model": "iris"})
    assert wait_for(client, later["job_id"])["status"] == "completed"

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    after = client.get(f"/api/jobs/{job['job_id']}").json()
    assert after["status"] == "cancelled"
    assert after["progress"] == {"done": 0, "total": len(FLOWERS)}


# ---------------------------------------------------------------------------- bad input
def test_more_inputs_than_jobs_max_items_is_413(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]
) -> None:
    client = serve(jobs={"max_items": 5})
    six = TEXTS[:6]
    lines = b"\n".join(orjson.dumps({"text": t}) for t in six)

    as_json = client.post("/api/predict/async", json={"texts": six, "model": "sentiment"})
    as_file = client.post(
        "/api/predict/async",
        files={"file": ("t.jsonl", lines)},
        data={"model": "sentiment"},
    )
    five = client.post("/api/predict/async", json={"texts": TEXTS[:5], "model": "sentiment"})

    assert "jobs.max_items" in error_of(as_json, 413, "payload_too_large")["message"]
    assert "jobs.max_items" in error_of(as_file, 413, "payload_too_large")["message"]
    assert five.status_code == 202


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"json": {"records": [FLOWERS[0], FLOWERS[1][:3]], "model": "iris"}}, "'records.1'"),
        ({"json": {"texts": ["fine", "x" * 10_001], "model": "sentiment"}}, "'texts.1'"),
        ({"json": {"texts": ["fine", 3], "model": "sentiment"}}, "texts.1"),
        ({"json": {"features": [1, 2], "model": "iris"}}, "'features'"),
        (
            {
                "files": {"file": ("f.jsonl", b'{"features": [1,2,3,4]}\n{"features": [1]}\n')},
                "data": {"model": "iris"},
            },
            "'line 2'",
        ),
        (
            {"files": {"file": ("f.jsonl", b'{"text": "ok"}\n{"text": "ok"\n')},
             "data": {"model": "sentiment"}},
            "line 2: invalid JSON",
        ),
        (
            {"files": {"file": ("f.jsonl", b'{"text": "ok"}\n{"txt": "ok"}\n')},
             "data": {"model": "sentiment"}},
            "line 2",
        ),
        (
            {
                "files": {"file": ("f.csv", b"sepal_length,sepal_width,petal_length,petal_width\n"
                                            b"1,2,3,4\n1,2,three,4\n")},
                "data": {"model": "iris"},
            },
            "line 3, column 'petal_length'",
        ),
        (
            {"files": {"file": ("f.csv", b"sepal_length,sepal_width\n1,2\n")},
             "data": {"model": "iris"}},
            "lacks column(s) petal_length, petal_width",
        ),
        (
            {"files": {"file": ("f.csv", b"review\nnice\n")}, "data": {"model": "sentiment"}},
            "needs a 'text' column",
        ),
        (
            {"files": {"file": ("f.csv", b"\xff\xfe bad bytes")}, "data": {"model": "sentiment"}},
            "not UTF-8",
        ),
        ({"json": {"texts": [], "model": "sentiment"}}, "'texts' is empty"),
        ({"json": {"texts": ["a"], "records": [[1]], "model": "iris"}}, "exactly one of"),
        ({"json": {"model": "iris"}}, "exactly one of"),
        ({"json": {"texts": ["a"], "model": "sentiment", "extra": 1}}, "extra: unknown field"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "JSON"),
        ({"files": {"file": ("f.jsonl", b"\n\n")}, "data": {"model": "sentiment"}}, "no inputs"),
        ({"files": {"other": ("f.jsonl", b"{}")}, "data": {"model": "iris"}}, "field 'file'"),
    ],
)  # fmt: skip
def test_invalid_input_is_422_naming_it_and_no_job_is_stored(
    client: TestClient, kwargs: dict[str, Any], fragment: str
) -> None:
    response = client.post("/api/predict/async", **kwargs)

    assert fragment in error_of(response, 422, "invalid_input")["message"]
    settings = client.app.state.mlserve.settings  # type: ignore[attr-defined]
    assert jobs_in_db(settings.jobs_database) == 0


def test_unknown_model_is_404_and_other_media_types_415(client: TestClient) -> None:
    unknown = client.post("/api/predict/async", json={"texts": ["a"], "model": "nope"})
    as_text = client.post(
        "/api/predict/async", content=b"hello", headers={"content-type": "text/plain"}
    )
    odd_file = client.post(
        "/api/predict/async", files={"file": ("x.parquet", b"PAR1")}, data={"model": "iris"}
    )

    error_of(unknown, 404, "model_not_found")
    error_of(as_text, 415, "unsupported_media_type")
    error_of(odd_file, 415, "unsupported_media_type")


# ---------------------------------------------------------------------------- failures
def test_a_model_failing_mid_job_fails_it_with_a_clear_error(
    registry: Registry, poisonable_estimator: Any, serve: Callable[..., TestClient]
) -> None:
    registry.register_estimator(
        poisonable_estimator, name="poison", feature_names=IRIS_FEATURES, check=False
    )
    client = serve(jobs={"chunk_size": 2})
    rows = [FLOWERS[0], FLOWERS[1], FLOWERS[2], [-999.0, 1.0, 1.0, 1.0], FLOWERS[3]]

    job = submit(client, json={"records": rows})
    status = wait_for(client, job["job_id"])

    assert status["status"] == "failed"
    assert status["error"] == "rows 2-3: model poison:1 failed to predict"
    assert status["progress"] == {"done": 2, "total": 5}
    assert broken_models.SECRET_DETAIL not in str(status)
    # The rows scored before the failure are kept, the failure stated with them.
    page = client.get(f"/api/jobs/{job['job_id']}/result")
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["status"], body["done"], body["total"]) == ("failed", 2, 5)
    assert body["error"] == status["error"]
    assert body["next_offset"] is None and len(body["predictions"]) == 2
    assert broken_models.SECRET_DETAIL not in page.text


def test_without_a_job_store_jobs_are_503_and_predictions_go_on(
    all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = serve(jobs={"database": str(tmp_path)})  # a folder: SQLite cannot open it

    refused = client.post("/api/predict/async", json={"texts": ["a"], "model": "sentiment"})
    status = client.get(f"/api/jobs/{uuid.uuid4().hex}")
    predicted = client.post("/api/predict", json={"text": "a", "model": "sentiment"})

    error_of(refused, 503, "jobs_unavailable")
    error_of(status, 503, "jobs_unavailable")
    assert predicted.status_code == 200


def test_jobs_are_documented_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]

    submit_op = paths["/api/predict/async"]["post"]
    content = submit_op["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["application/json"]["schema"]["examples"]
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert {"202", "413", "422"} <= set(submit_op["responses"])
    assert "JobAccepted" in str(submit_op["responses"]["202"])
    assert "JobInfo" in str(paths["/api/jobs/{job_id}"]["get"]["responses"]["200"])
    assert "JobInfo" in str(paths["/api/predict/async/{job_id}"]["get"]["responses"]["200"])
    result = paths["/api/jobs/{job_id}/result"]["get"]
    assert {"application/json", "application/x-ndjson"} <= set(
        result["responses"]["200"]["content"]
    )
    assert {"409", "404"} <= set(result["responses"])
    assert {"200", "204", "404"} <= set(paths["/api/jobs/{job_id}"]["delete"]["responses"])
    for name in ("JobAccepted", "JobInfo", "JobResultPage"):
        assert spec["components"]["schemas"][name]["examples"], name


def test_a_job_runs_on_the_version_resolved_at_submission(
    registry: Registry, iris_estimator: Any, svc_estimator: Any, serve: Callable[..., TestClient]
) -> None:
    registry.register_estimator(iris_estimator, name="iris", feature_names=IRIS_FEATURES)
    registry.register_estimator(
        svc_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    client = serve()

    job = submit(client, json={"records": FLOWERS, "model": "iris:1"})
    default = submit(client, json={"records": FLOWERS[:2]})

    assert (job["version"], default["version"]) == (1, 2)
    wait_for(client, job["job_id"])
    assert_same(all_results(client, job["job_id"]), batch(client, records=FLOWERS, model="iris:1"))
    assert all(r["probabilities"] is not None for r in all_results(client, job["job_id"]))
    wait_for(client, default["job_id"])
    assert all(r["probabilities"] is None for r in all_results(client, default["job_id"]))


def test_shutdown_mid_job_gives_the_job_back_for_the_next_server(
    registry: Registry,
    gated_estimator: Callable[[str], Any],
    gate: tuple[str, broken_models.Gate],
    make_settings: Callable[..., Any],
) -> None:
    from mlserve.jobs.sqlite import SqliteJobStore
    from mlserve.server.app import create_app

    name, held = gate
    registry.register_estimator(
        gated_estimator(name), name="gated", feature_names=IRIS_FEATURES, check=False
    )
    settings = make_settings(jobs={"chunk_size": 2}, server={"graceful_timeout": 0.2})
    with TestClient(create_app(settings)) as client:
        held.entered.clear()
        job = submit(client, json={"records": FLOWERS})
        assert held.entered.wait(WAIT_S)
    # The lifespan has ended with the first chunk still inside the model.
    held.release.set()

    store = SqliteJobStore(settings.jobs_database)
    try:
        left = store.get_sync(job["job_id"])
        assert (left.status, left.done, left.lease_owner) == ("running", 0, None)
        retaken = store.claim_next_sync("next-server", 30.0)  # at once: no lease to wait out
        assert retaken is not None and retaken.id == job["job_id"]
        assert retaken.attempts == 1  # given back, not counted as an abandoned attempt
    finally:
        store.close_sync()


def test_a_bare_model_name_follows_its_ab_split_like_the_batch_endpoint(
    registry: Registry, iris_estimator: Any, svc_estimator: Any, serve: Callable[..., TestClient]
) -> None:
    registry.register_estimator(iris_estimator, name="iris", feature_names=IRIS_FEATURES)
    registry.register_estimator(
        svc_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    client = serve(traffic={"splits": {"iris": {"1": 100}}})

    job = submit(client, json={"records": FLOWERS, "model": "iris"})
    pinned = submit(client, json={"records": FLOWERS, "model": "iris:2"})

    assert (job["version"], pinned["version"]) == (1, 2)
    wait_for(client, job["job_id"])
    assert_same(all_results(client, job["job_id"]), batch(client, records=FLOWERS, model="iris:1"))


# ---------------------------------------------------------------------------- body limit
def test_a_job_of_jobs_max_items_texts_is_accepted_and_completes_with_default_settings(
    text_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(raise_server_exceptions=False)
    settings = client.app.state.mlserve.settings  # type: ignore[attr-defined]
    count = settings.jobs.max_items
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(count)]
    body = orjson.dumps({"texts": texts, "model": "sentiment"})
    assert len(body) > settings.server.max_body_bytes  # over the limit of the other routes

    accepted = client.post("/api/predict/async", content=body, headers=JSON)
    as_batch = client.post("/api/predict/batch", content=body, headers=JSON)

    assert accepted.status_code == 202, accepted.text
    error_of(as_batch, 413, "payload_too_large")
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 300
    while (status := client.get(f"/api/jobs/{job_id}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)  # polling interval of a bounded wait
    assert status["status"] == "completed", status
    assert status["progress"] == {"done": count, "total": count}
    last = client.get(f"/api/jobs/{job_id}/result", params={"offset": count - 1}).json()
    expected = batch(client, texts=[texts[-1]], model="sentiment")
    assert [p["prediction"] for p in last["predictions"]] == [expected[0]["prediction"]]


def test_a_job_upload_over_server_max_body_bytes_is_accepted(
    idle: TestClient, text_meta: ModelMetadata
) -> None:
    lines = b"\n".join(orjson.dumps({"text": f"{TEXTS[i % 7]} #{i}"}) for i in range(60_000))
    assert len(lines) > 2 * 1024 * 1024  # server.max_body_bytes by default

    job = submit(idle, files={"file": ("big.jsonl", lines)}, data={"model": "sentiment"})

    assert job["total"] == 60_000


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_job_body_over_jobs_max_body_bytes_is_413(
    text_meta: ModelMetadata, serve: Callable[..., TestClient], chunked: bool
) -> None:
    client = serve(
        raise_server_exceptions=False,
        server={"max_body_bytes": 1 << 20},
        jobs={"max_body_bytes": 4096, "concurrency": 0},
    )
    body = orjson.dumps({"texts": ["fine " * 1000] * 10, "model": "sentiment"})
    assert 4096 < len(body) < 1 << 20
    lines = b"\n".join(orjson.dumps({"text": "fine"}) for _ in range(500))
    content: Any = (
        iter([body[i : i + 1024] for i in range(0, len(body), 1024)]) if chunked else body
    )

    as_json = client.post("/api/predict/async", content=content, headers=JSON)
    as_file = client.post(
        "/api/predict/async", files={"file": ("t.jsonl", lines)}, data={"model": "sentiment"}
    )
    as_batch = client.post("/api/predict/batch", content=body, headers=JSON)

    error_of(as_json, 413, "payload_too_large")
    error_of(as_file, 413, "payload_too_large")
    assert as_batch.status_code == 200, as_batch.text  # other routes: server.max_body_bytes
    settings = client.app.state.mlserve.settings  # type: ignore[attr-defined]
    assert jobs_in_db(settings.jobs_database) == 0
