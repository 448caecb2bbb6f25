"""The job as the API shows it (``GET /v1/merges/{id}``), shared with the webhooks, whose ``data``
is this very view taken at the moment of the event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from jobs.records import JobError, JobProgress, JobRecord, JobResult, JobStatus, PinnedSource


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class JobPublic(BaseModel):
    id: str
    kind: str = Field(default="merge", description="merge or init (an OSRM initialisation, POST /v1/inits).")
    status: JobStatus
    method: str
    queue: str
    progress: JobProgress
    error: JobError | None = None
    result: JobResult | None = None
    sources: list[PinnedSource] = Field(description="Each adapter with its pinned revision once fetched.")
    base_model: PinnedSource | None = Field(
        default=None, description="output.base_model once staged, with its commit sha when it comes from the Hub."
    )
    spec: dict[str, Any]
    attempts: int
    worker: str | None = Field(default=None, description="host:pid running the current attempt (for operators).")
    device: str | None = Field(default=None, description="The device the current (or last) attempt merges on.")
    cancel_requested: bool
    purged: bool = Field(
        default=False,
        description="The job's stored result was deleted (`purged_by`: tenant or retention); `result` stays as a record.",
    )
    purged_at: datetime | None = None
    purged_by: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, record: JobRecord) -> JobPublic:
        return cls(
            id=record.id,
            kind=record.kind,
            status=record.status,
            method=record.spec.get("method", ""),
            queue=record.queue,
            progress=record.progress,
            error=record.error,
            result=_with_artifact_url(record),
            sources=record.sources,
            base_model=record.base_model,
            spec=record.spec,
            attempts=record.attempts,
            worker=record.worker,
            device=record.device,
            cancel_requested=record.cancel_requested,
            purged=record.purged_at is not None,
            purged_at=_ts(record.purged_at),
            purged_by=record.purged_by,
            created_at=_ts(record.created_at),
            updated_at=_ts(record.updated_at),
            started_at=_ts(record.started_at),
            finished_at=_ts(record.finished_at),
        )


def _with_artifact_url(record: JobRecord) -> JobResult | None:
    """The API, not the worker, says where a result in the local store downloads from."""
    if record.result is None:
        return None
    collection = "inits" if record.kind == "init" else "merges"
    local = record.result.uri.startswith("file://") and record.purged_at is None
    url = f"/v1/{collection}/{record.id}/artifact" if local else None
    return record.result.model_copy(update={"artifact_url": url})
