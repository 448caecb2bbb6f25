"""The job record: what Redis keeps for each job, and the states it moves through.

The record is the only source of truth about a job (never Celery's AsyncResult). ``hub_token_enc``
is a per-job token encrypted with the server's key; it is dropped when the job ends and never leaves
the server.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

# The one state machine. Each arrow is one named JobStore operation:
#   queued  -> running     claim
#   queued  -> cancelled   request_cancel (never ran)
#   queued  -> failed      fail_unsent (the broker refused the message)
#   running -> running     claim (take-over of a lost holder's job: a new attempt)
#   running -> queued      requeue (transient error), recover_lost (holder gone)
#   running -> succeeded | failed | cancelled   finish; recover_lost (worker_lost, time limit)
# Terminal states are final: a record that ended never changes status again. The one later write is
# a purge (mark_purged: the tenant or result retention deleted its files), which sets purged_at/by.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled, JobStatus.failed}),
    JobStatus.running: frozenset({JobStatus.running, JobStatus.queued, *TERMINAL}),
    **{status: frozenset() for status in TERMINAL},
}


class InvalidTransitionError(RuntimeError):
    """A write tried to move a job along an arrow the state machine does not have (a bug, not input)."""


class JobProgress(BaseModel):
    stage: str = Field(description="queued, fetch, fetch_base_model, load, merge, orthogonalize, write, publish, done, cancelled")
    done: int = 0
    total: int = 0


class JobError(BaseModel):
    code: str
    message: str


class ResultFile(BaseModel):
    path: str
    size: int


class JobResult(BaseModel):
    uri: str = Field(description="Where the result lives: file://, s3:// or a Hub URL.")
    files: list[ResultFile]
    summary: dict[str, int | float | str] = Field(
        description="Diagnostics summary (overlap, magnitude spread, compression error; scaling_requested, scaling_rule, "
        "scaling_auto_table (the table 'auto' read) and the λ applied, scaling_mean/_min/_max)."
    )
    artifact_url: str | None = Field(
        default=None, description="Tar download, for results in the local store (set by the API when it answers)."
    )


class PinnedSource(BaseModel):
    source: str
    requested_revision: str | None = None
    revision: str | None = Field(
        default=None, description="Commit sha (Hub), ETag (S3) or sha256 (local file); null for a local base model."
    )
    weight: float = 1.0


class NotifyTarget(BaseModel):
    """The webhook a job sends its events to: the request's ``notify``, or the tenant's default URL."""

    url: str
    events: list[str]


def now() -> float:
    return round(time.time(), 3)


JobKind = Literal["merge", "init"]


class JobRecord(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str
    kind: JobKind = Field(
        default="merge", description="merge (POST /v1/merges) or init (POST /v1/inits, OSRM); records before it are merges."
    )
    status: JobStatus = JobStatus.queued
    spec: dict[str, Any]
    queue: str
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    progress: JobProgress = Field(default_factory=lambda: JobProgress(stage="queued"))
    error: JobError | None = None
    result: JobResult | None = None
    sources: list[PinnedSource] = Field(default_factory=list)
    base_model: PinnedSource | None = Field(
        default=None, description="output.base_model once staged: its commit sha when it comes from the Hub."
    )
    attempts: int = 0
    attempt_started_at: float | None = Field(default=None, description="When the current (or last) attempt was claimed.")
    not_before: float | None = Field(default=None, description="A retry's message is due then (queued jobs only).")
    worker: str | None = Field(default=None, description="host:pid of the process running the current attempt.")
    device: str | None = Field(default=None, description="Where the current (or last) attempt merges: cpu, cuda:0, ...")
    cancel_requested: bool = False
    hub_token_enc: str | None = None
    notify: NotifyTarget | None = None
    purged_at: float | None = Field(default=None, description="When the job's stored files were deleted.")
    purged_by: Literal["tenant", "retention"] | None = Field(
        default=None, description="tenant: DELETE ...?purge=true; retention: LORAMERGE_RESULT_MAX_AGE_S / _MAX_BYTES."
    )
    progress_event_at: float | None = Field(
        default=None, description="When the last `job.stage` or `job.progress` event was logged (coalescing)."
    )
    progress_webhook_at: float | None = Field(
        default=None, description="When the last `progress` webhook was queued (coalescing)."
    )
