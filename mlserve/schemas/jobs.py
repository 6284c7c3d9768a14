"""Async prediction jobs: batch scoring in the background (POST /api/predict/async, /api/jobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples
from mlserve.schemas.common import NOT_EMPTY, Features, JsonInt, exactly_one_of
from mlserve.schemas.predict import PredictionItem, Text

__all__ = [
    "AsyncPredictRequest",
    "JobAccepted",
    "JobInfo",
    "JobKind",
    "JobProgress",
    "JobResultPage",
    "JobStatus",
]

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
JobKind = Literal["texts", "records"]


class AsyncPredictRequest(BaseModel):
    """One input or a batch, scored in the background: send exactly one of the input fields."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        protected_namespaces=(),
        # Read from JSON text by pydantic, which takes NaN / Infinity tokens; refused here as
        # on every other route (null is the missing value).
        allow_inf_nan=False,
        json_schema_extra={
            "examples": examples.ASYNC_PREDICT_REQUEST,
            **exactly_one_of(text=None, features=None, texts=NOT_EMPTY, records=NOT_EMPTY),
        },
    )

    text: Text | None = Field(default=None, description="One text (text models).")
    features: Features | None = Field(default=None, description="One feature row (tabular).")
    texts: list[Text] | None = Field(default=None, description="Texts (text models).")
    records: list[Features] | None = Field(
        default=None, description="Feature rows (tabular models)."
    )
    model: str | None = Field(
        default=None,
        description="Model reference: name, name:VERSION or name@ALIAS. Default: the server's.",
    )
    model_version: JsonInt | str | None = Field(
        default=None, description="Version number or alias (compatibility; prefer 'model')."
    )


class JobProgress(BaseModel):
    done: int = Field(description="Inputs scored so far.")
    total: int = Field(description="Inputs in the job.")


class JobAccepted(BaseModel):
    """A job was stored and will be scored in the background."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.JOB_ACCEPTED},
    )

    job_id: str
    status: JobStatus
    status_url: str
    result_url: str
    model: str = Field(description="Model the job is scored with.")
    version: int = Field(description="Version resolved at submission; every row uses it.")
    total: int
    created_at: datetime


class JobInfo(BaseModel):
    """Status, progress and timestamps of one job."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.JOB_INFO},
    )

    job_id: str
    status: JobStatus
    model: str
    version: int
    kind: JobKind = Field(description="texts (text model) or records (tabular model).")
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None = Field(description="When a worker first took the job.")
    finished_at: datetime | None = Field(description="When it completed, failed or was cancelled.")
    expires_at: datetime | None = Field(
        description="When a finished job and its results are deleted (jobs.ttl_s)."
    )
    error: str | None = Field(description="Why the job failed; null otherwise.")
    status_url: str
    result_url: str


class JobResultPage(BaseModel):
    """A page of a job's predictions, in input order: every row of a completed job, or the
    rows a failed job scored before it stopped (status and error say so)."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.JOB_RESULT_PAGE},
    )

    job_id: str
    model: str
    version: int
    total: int = Field(description="Predictions in the whole job.")
    offset: int = Field(description="Index of the first prediction on this page.")
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")
    predictions: list[PredictionItem] = Field(
        description="predictions[i] answers input offset + i."
    )
    status: Literal["completed", "failed"] = Field(
        default="completed",
        description="completed: every input has its prediction; failed: only the first `done` "
        "inputs do (scored before the job stopped; `error` says why).",
    )
    done: int | None = Field(
        default=None,
        description="Predictions there are: `total` for a completed job, fewer for a failed one.",
    )
    error: str | None = Field(default=None, description="Why the job failed; null otherwise.")
