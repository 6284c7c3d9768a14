"""Async jobs: submit inputs to score in the background, poll the job, fetch its results."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import pydantic
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from mlserve.errors import InvalidInputError, MlserveError, PayloadTooLargeError
from mlserve.jobs import Job, JobNotCompletedError, JobStore, JobsUnavailableError
from mlserve.runtime.model import LoadedModel
from mlserve.schemas import (
    AsyncPredictRequest,
    ErrorResponse,
    JobAccepted,
    JobInfo,
    JobKind,
    JobResultPage,
)
from mlserve.server.deps import SettingsDep, StateDep
from mlserve.server.jsonbody import DuplicateKeyError, loads
from mlserve.server.routes.predict import JSONBytes
from mlserve.server.scope import client_key, mark_model
from mlserve.serving.jobrunner import prepare_rows
from mlserve.serving.manager import InputKind, Runtime
from mlserve.serving.state import AppState

router = APIRouter(prefix="/api", tags=["jobs"])

NDJSON = "application/x-ndjson"
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
# Offsets are echoed in the answer: keep them integers every JSON reader holds exactly.
MAX_OFFSET = 2**53 - 1
HAS_MULTIPART = importlib.util.find_spec("python_multipart") is not None

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such job (or it expired)."},
    503: {"model": ErrorResponse, "description": "The job store is unavailable."},
}

SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AsyncPredictRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": (
                                '.jsonl: one {"text": ...} or {"features": ...} object per '
                                "line; .csv: a header row, then a `text` column (text models) "
                                "or one numeric column per feature (tabular models; an empty "
                                "cell is a missing value, other columns are ignored)."
                            ),
                        },
                        "model": {"type": "string", "description": "Model reference."},
                        "model_version": {"type": "string", "description": "Version or alias."},
                    },
                }
            },
        },
    }
}

# A job cancelled while running (the JobInfo schema's example shows one in progress).
CANCELLED_EXAMPLE: dict[str, Any] = {
    "job_id": "6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
    "status": "cancelled",
    "model": "sentiment",
    "version": 3,
    "kind": "texts",
    "progress": {"done": 4000, "total": 10000},
    "created_at": "2025-11-29T17:30:00Z",
    "started_at": "2025-11-29T17:30:00.2Z",
    "finished_at": "2025-11-29T17:31:12.5Z",
    "expires_at": "2025-12-06T17:31:12.5Z",
    "error": None,
    "status_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817",
    "result_url": "/api/jobs/6f1c2d0e9b7a4c3f8e5d4c3b2a190817/result",
}


# ---------------------------------------------------------------------------- helpers
def _store(state: AppState) -> JobStore:
    store: JobStore | None = state.jobs
    if store is None:
        raise JobsUnavailableError("async jobs are unavailable: the job store could not be opened")
    return store


def _urls(request: Request, job_id: str) -> tuple[str, str]:
    status = f"{request.scope.get('root_path', '')}/api/jobs/{job_id}"
    return status, f"{status}/result"


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _info(request: Request, job: Job) -> dict[str, Any]:
    status_url, result_url = _urls(request, job.id)
    return {
        "job_id": job.id,
        "status": job.status,
        "model": job.model,
        "version": job.version,
        "kind": job.kind,
        "progress": {"done": job.done, "total": job.total},
        "created_at": _when(job.created_at),
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
        "expires_at": _when(job.expires_at),
        "error": job.error,
        "status_url": status_url,
        "result_url": result_url,
    }


@dataclass(slots=True)
class Submission:
    reference: str | None  # the model the client asked for
    kind: JobKind
    inputs: list[Any]
    fields: list[str] | None  # names of the inputs in error messages (None: texts.N, records.N)


def _too_many(what: str, count: int | str, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{what} has {count} inputs; the limit is {limit} (jobs.max_items): split it into jobs"
    )


def _from_json(raw: bytes, limit: int) -> tuple[AsyncPredictRequest, str]:
    try:
        loads(raw or b"null")  # what the other routes refuse (duplicate keys), refused here too
    except DuplicateKeyError as exc:
        raise InvalidInputError(f"invalid JSON body: {exc.msg}") from None
    except orjson.JSONDecodeError:
        pass  # other malformed JSON: pydantic's json_invalid error below names the problem
    try:
        body = AsyncPredictRequest.model_validate_json(raw or b"null")
    except pydantic.ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    given = [f for f in ("text", "features", "texts", "records") if getattr(body, f) is not None]
    if len(given) != 1:
        raise InvalidInputError(
            "send exactly one of 'text', 'features', 'texts' or 'records' "
            "(or upload a file as multipart/form-data field 'file')"
        )
    field = given[0]
    if field in ("texts", "records"):
        items: list[Any] = getattr(body, field)
        if not items:
            raise InvalidInputError(f"'{field}' is empty; send 1 to {limit} items")
        if len(items) > limit:
            raise _too_many(f"'{field}'", len(items), limit)
    return body, field


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"the file is not UTF-8 text (byte {exc.start})") from None


def _parse_jsonl(data: bytes, model: LoadedModel, limit: int) -> tuple[list[Any], list[str]]:
    wanted = "text" if model.is_text else "features"
    inputs: list[Any] = []
    fields: list[str] = []
    # Split on newlines only: U+2028, U+0085 and friends may sit inside a JSON string.
    for n, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"line {n}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict) or set(obj) - {"text", "features"} or len(obj) != 1:
            raise InvalidInputError(
                f'line {n}: expected one object per line, {{"text": ...}} or {{"features": ...}}'
            )
        if wanted not in obj:
            raise InvalidInputError(f"line {n}: model {model.ref} needs '{wanted}'")
        inputs.append(obj[wanted])
        fields.append(f"line {n}")
        if len(inputs) > limit:
            raise _too_many("the file", f"more than {limit}", limit)
    return inputs, fields


def _number(raw: str | None, n: int, column: str) -> float | None:
    if raw is None:
        raise InvalidInputError(f"line {n}: fewer values than columns in the header")
    text = raw.strip()
    if not text:
        return None  # a missing value, like null in JSON
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(
            f"line {n}, column '{column}': {raw!r:.40} is not a number"
        ) from None


def _parse_csv(data: bytes, model: LoadedModel, limit: int) -> tuple[list[Any], list[str]]:
    reader = csv.DictReader(io.StringIO(_decode(data), newline=""))
    inputs: list[Any] = []
    fields: list[str] = []
    try:
        header = reader.fieldnames
        if not header:
            raise InvalidInputError("the file is empty: expected a header row")
        if model.is_text:
            if "text" not in header:
                raise InvalidInputError(
                    f"model {model.ref} takes text: the CSV needs a 'text' column "
                    f"(found: {', '.join(header)})"
                )
            columns = ["text"]
        elif model.feature_names:
            missing = [c for c in model.feature_names if c not in header]
            if missing:
                raise InvalidInputError(
                    f"the CSV lacks column(s) {', '.join(missing)} of model {model.ref}"
                )
            columns = model.feature_names
        else:
            columns = list(header)
        for row in reader:
            n = reader.line_num
            if None in row:
                raise InvalidInputError(f"line {n}: more values than columns in the header")
            if model.is_text:
                text = row["text"]
                if text is None:
                    raise InvalidInputError(f"line {n}: fewer values than columns in the header")
                inputs.append(text)
            elif model.signature is not None:  # typed columns (a DataFrame model)
                where = f"line {n}"
                inputs.append([model.parse_cell(j, row[c], where) for j, c in enumerate(columns)])
            else:
                inputs.append([_number(row[c], n, c) for c in columns])
            fields.append(f"line {n}")
            if len(inputs) > limit:
                raise _too_many("the file", f"more than {limit}", limit)
    except csv.Error as exc:
        raise InvalidInputError(f"line {reader.line_num}: invalid CSV ({exc})") from None
    return inputs, fields


def _upload_input_kind(data: bytes, file_kind: Literal["jsonl", "csv"]) -> InputKind | None:
    """What an upload sends (it picks the default model): a .csv with a `text` column or a
    .jsonl whose first object has "text" sends texts; None when its first line cannot say."""
    start, end = 0, data.find(b"\n")
    while end >= 0 and not data[start:end].strip():  # skip blank lines
        start, end = end + 1, data.find(b"\n", end + 1)
    text = data[start : end if end >= 0 else len(data)].decode("utf-8-sig", errors="replace")
    if file_kind == "csv":
        return "text" if "text" in next(csv.reader([text]), []) else "tabular"
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # the parser names the line once a model is chosen
    if isinstance(obj, dict) and len(obj) == 1:
        return "text" if "text" in obj else "tabular" if "features" in obj else None
    return None


def _file_kind(upload: UploadFile) -> Literal["jsonl", "csv"]:
    name = (upload.filename or "").lower()
    media = (upload.content_type or "").split(";")[0].strip().lower()
    if name.endswith((".jsonl", ".ndjson")) or media in (NDJSON, "application/jsonl"):
        return "jsonl"
    if name.endswith(".csv") or media == "text/csv":
        return "csv"
    raise HTTPException(415, "upload a .jsonl or a .csv file")


async def _read_upload(request: Request) -> tuple[UploadFile, bytes, str | None, str | None]:
    if not HAS_MULTIPART:
        raise HTTPException(
            415, "file uploads need the python-multipart package on the server; send JSON"
        )
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError("send the file in the multipart/form-data field 'file'")
        data = await upload.read()
        model, version = form.get("model"), form.get("model_version")
        return (
            upload,
            data,
            model if isinstance(model, str) and model else None,
            version if isinstance(version, str) and version else None,
        )


def _missing(value: Any) -> bool:
    """A missing value of a prepared row: NaN (float rows) or None (typed rows)."""
    return value is None or (type(value) is float and math.isnan(value))


def _missing_probe(rows: list[Any]) -> list[Any] | None:
    """One row with a missing value in every column that some row leaves missing."""
    probe: list[Any] | None = None
    for row in rows:
        if any(_missing(v) for v in row):
            if probe is None:
                probe = list(row)
            else:
                probe = [v if _missing(v) else p for v, p in zip(row, probe, strict=True)]
    return probe


async def _check_missing_accepted(runtime: Runtime, probe: list[Any]) -> None:
    """Only the model knows whether it takes missing values (/api/predict finds out when it
    predicts): try them once now, so an accepted job never fails for its input (422)."""
    try:
        await runtime.batcher.submit(probe)
    except InvalidInputError:
        raise
    except MlserveError:
        pass  # a model failing otherwise is the job's to report, as it always was


def _wants_lines(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "jsonl"
    accept = request.headers.get("accept", "")
    return any(m in accept for m in (NDJSON, "application/jsonl", "application/json-lines"))


# ---------------------------------------------------------------------------- routes
@router.post(
    "/predict/async",
    status_code=202,
    response_model=JobAccepted,
    responses={
        400: {"model": ErrorResponse, "description": "Malformed multipart body."},
        404: {"model": ErrorResponse, "description": "Unknown model, version or alias."},
        413: {
            "model": ErrorResponse,
            "description": "More inputs than jobs.max_items, or a body over jobs.max_body_bytes.",
        },
        415: {"model": ErrorResponse, "description": "Neither JSON nor a .jsonl/.csv upload."},
        422: {"model": ErrorResponse, "description": "An invalid input (the message names it)."},
        503: {"model": ErrorResponse, "description": "Model not loaded, or no job store."},
    },
    openapi_extra=SUBMIT_BODY,
    summary="Submit an async prediction job",
)
async def submit_job(request: Request, state: StateDep, settings: SettingsDep) -> Response:
    """Store one input or up to jobs.max_items inputs (JSON, or a .jsonl/.csv upload) as a job
    scored in the background; every input is validated first, so a job once accepted only
    fails if the model does. The version is chosen as for /api/predict/batch (an A/B split
    included) and every row is scored with it. Poll status_url; fetch result_url once it has
    completed."""
    store = _store(state)
    scope = request.scope
    limit = settings.jobs.max_items
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        upload, data, reference, version = await _read_upload(request)
        file_kind = _file_kind(upload)
        runtime = await state.service.choose(
            reference,
            version,
            lambda: client_key(scope),
            kind=None if reference is not None else _upload_input_kind(data, file_kind),
        )
        parse = _parse_jsonl if file_kind == "jsonl" else _parse_csv
        inputs, fields = await asyncio.to_thread(parse, data, runtime.model, limit)
        if not inputs:
            raise InvalidInputError("the file holds no inputs")
        kind: JobKind = "texts" if runtime.model.is_text else "records"
        job_input = Submission(reference, kind, inputs, fields)
    elif media in ("", "application/json") or media.endswith("+json"):
        body, field = await asyncio.to_thread(_from_json, await request.body(), limit)
        runtime = await state.service.choose(
            body.model,
            body.model_version,
            lambda: client_key(scope),
            kind="text" if field in ("text", "texts") else "tabular",
        )
        if field in ("text", "features"):
            kind = "texts" if field == "text" else "records"
            job_input = Submission(body.model, kind, [getattr(body, field)], [field])
        else:
            kind = "texts" if field == "texts" else "records"
            job_input = Submission(body.model, kind, getattr(body, field), None)
    else:
        raise HTTPException(
            415, "send application/json, or a .jsonl/.csv file as multipart/form-data"
        )
    mark_model(scope, runtime)
    model = runtime.model
    rows = await asyncio.to_thread(
        prepare_rows, model, job_input.kind, job_input.inputs, fields=job_input.fields
    )
    if not model.is_text:
        probe = await asyncio.to_thread(_missing_probe, rows)
        if probe is not None:
            await _check_missing_accepted(runtime, probe)
    job = await store.submit(
        model_reference=job_input.reference,
        model=model.name,
        version=model.version,
        kind=job_input.kind,
        inputs=job_input.inputs,
    )
    state.metrics.jobs_submitted.labels(job.model).inc()
    if state.job_dispatcher is not None:
        state.job_dispatcher.notify(job.id)
    status_url, result_url = _urls(request, job.id)
    accepted = {
        "job_id": job.id,
        "status": job.status,
        "status_url": status_url,
        "result_url": result_url,
        "model": job.model,
        "version": job.version,
        "total": job.total,
        "created_at": _when(job.created_at),
    }
    return JSONBytes(orjson.dumps(accepted), status_code=202, headers={"Location": status_url})


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=NOT_FOUND, summary="Job status")
async def job_status(job_id: str, request: Request, state: StateDep) -> Response:
    """Status (pending, running, completed, failed, cancelled), progress and timestamps."""
    job = await _store(state).get(job_id)
    return JSONBytes(orjson.dumps(_info(request, job)))


@router.get(
    "/predict/async/{job_id}",
    response_model=JobInfo,
    responses=NOT_FOUND,
    summary="Job status (alias of GET /api/jobs/{job_id})",
)
async def job_status_alias(job_id: str, request: Request, state: StateDep) -> Response:
    """The same answer as GET /api/jobs/{job_id}, kept for older clients."""
    return await job_status(job_id, request, state)


@router.get(
    "/jobs/{job_id}/result",
    response_model=JobResultPage,
    responses={
        200: {
            "content": {
                NDJSON: {
                    "schema": {"type": "string"},
                    "example": '{"prediction":"positive","confidence":0.91,"probabilities":'
                    '{"negative":0.04,"neutral":0.05,"positive":0.91}}\n',
                }
            },
            "description": "A page of predictions as JSON; or, with `Accept: "
            "application/x-ndjson` or `?format=jsonl`, one prediction per line (streamed), "
            "line i answering input offset + i (headers X-Job-Total, X-Job-Status and "
            "X-Job-Done). A failed job answers 200 too, with the rows it scored before it "
            "stopped: `status` failed, `done` and `error` in the page.",
        },
        409: {
            "model": ErrorResponse,
            "description": "The job is pending or running, or was cancelled.",
        },
        **NOT_FOUND,
    },
    summary="Job results",
)
async def job_result(
    job_id: str,
    request: Request,
    state: StateDep,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Index of the first prediction.")
    ] = 0,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE,
            description=f"Predictions per page (JSON: default {DEFAULT_PAGE}; "
            "JSON lines: default all).",
        ),
    ] = None,
    fmt: Annotated[
        Literal["json", "jsonl"] | None,
        Query(alias="format", description="jsonl: stream JSON lines (like Accept: x-ndjson)."),
    ] = None,
) -> Response:
    """A completed job's predictions in input order: pages of JSON (follow next_offset) or a
    stream of JSON lines. A failed job gives the rows it scored before it stopped (its first
    `done` rows), with status failed and the error. 409 while pending or running, or once
    cancelled."""
    store = _store(state)
    if not _wants_lines(request, fmt):
        page = await store.results(job_id, offset, limit or DEFAULT_PAGE)
        payload = {
            "job_id": page.job.id,
            "model": page.job.model,
            "version": page.job.version,
            "total": page.job.total,
            "offset": offset,
            "limit": limit or DEFAULT_PAGE,
            "next_offset": page.next_offset,
            "predictions": page.items,
            "status": page.job.status,
            "done": page.job.done,
            "error": page.job.error,
        }
        return JSONBytes(orjson.dumps(payload))
    job = JobNotCompletedError.check(await store.get(job_id))

    async def lines() -> AsyncIterator[bytes]:
        left = limit
        async for items in store.iter_results(job_id, offset):
            if left is not None:
                items = items[:left]
                left -= len(items)
            yield b"".join(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE) for item in items)
            if left == 0:
                return

    headers = {
        "X-Job-Total": str(job.total),
        "X-Job-Status": job.status,
        "X-Job-Done": str(job.done),
    }
    return StreamingResponse(lines(), media_type=NDJSON, headers=headers)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobInfo,
    responses={
        200: {
            "description": "The pending or running job is now cancelled (its status).",
            "content": {"application/json": {"example": CANCELLED_EXAMPLE}},
        },
        204: {"description": "The finished job and its results were deleted."},
        **NOT_FOUND,
    },
    summary="Cancel or delete a job",
)
async def delete_job(job_id: str, request: Request, state: StateDep) -> Response:
    """Cancel a pending or running job (200 with its status; no result is stored after
    this), or delete a finished one with its results (204)."""
    store = _store(state)
    cancelled = await store.cancel(job_id)
    if cancelled is None:
        await store.delete(job_id)
        return Response(status_code=204)
    # Counted here, not by a runner: a pending job is never seen by one, and a running job's
    # runner only finds out at its next chunk (or never, if its process died).
    state.metrics.jobs_finished.labels(cancelled.model, "cancelled").inc()
    return JSONBytes(orjson.dumps(_info(request, cancelled)))
