"""/v1/merges: submit, read, list, cancel, download. Thin: checks live in app.submission, state in the JobStore."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from app.deps import ServicesDep, TenantDep
from app.errors import RETRY_AFTER_S, ApiError, not_found
from app.schemas import ERROR_RESPONSES, JobPublic, JobsPublic, MergeCreate
from app.submission import fingerprint, needs_hub, notify_target, stored_spec, validate_submission
from app.tar_stream import tar_folder
from jobs.errors import ErrorCode
from jobs.queue import enqueue, route
from jobs.records import JobError, JobRecord, JobStatus
from jobs.results import local_folder_of, remove_local_result
from jobs.store import IdempotencyConflictError, QueueFullError

router = APIRouter(prefix="/v1/merges", tags=["merges"], responses=ERROR_RESPONSES)
log = logging.getLogger("loramerge.api")

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]
HubToken = Annotated[
    str | None,
    Header(alias="X-Hub-Token", max_length=512, description="Per-job Hugging Face token; stored encrypted, never echoed."),
]


@router.post("", status_code=202, response_model=JobPublic)
def create_merge(
    body: MergeCreate,
    response: Response,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
    hub_token: HubToken = None,
) -> JobPublic:
    """Validate the job and queue it; answers at once with the job and a `Location` to poll."""
    resolved = validate_submission(body, services.settings)
    record = JobRecord(
        tenant=tenant,
        spec=stored_spec(body),
        queue=route(resolved, services.settings),
        notify=notify_target(body, tenant, services.settings),
    )
    if hub_token and needs_hub(body):
        record.hub_token_enc = services.tokens.seal(hub_token)
    try:
        record, created = services.store.create(
            record, max_queued=services.settings.max_queued_jobs, idempotency_key=idempotency_key, fingerprint=fingerprint(body)
        )
    except QueueFullError:
        retry = str(services.settings.retry_after_s)
        raise ApiError(ErrorCode.queue_full, f"the queue is full; retry in {retry} s", headers={"Retry-After": retry}) from None
    except IdempotencyConflictError:
        raise ApiError(ErrorCode.idempotency_key_reused, "this Idempotency-Key was used with a different request body") from None
    if created:
        _enqueue(services, record)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/merges/{record.id}"
    return JobPublic.of(record)


def _enqueue(services, record: JobRecord) -> None:
    try:
        enqueue(services.celery, record)
    except Exception:
        log.exception("enqueue failed for job %s", record.id)
        services.store.fail_unsent(
            record.id, JobError(code=ErrorCode.enqueue_failed, message="the job could not be queued; submit it again")
        )
        raise ApiError(
            ErrorCode.queue_unavailable,
            "the job queue is unreachable; the job was not queued",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None
    log.info(
        "job %s queued on %s for tenant %s (%s)", record.id, record.queue, record.tenant, record.spec.get("method"),
        extra={"job_id": record.id, "tenant": record.tenant, "attempt": 0},
    )  # fmt: skip


@router.get("", response_model=JobsPublic)
def list_merges(
    services: ServicesDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsPublic:
    """This tenant's merge jobs, newest first (init jobs: `GET /v1/inits`)."""
    return jobs_page(services, tenant, "merge", status=status, limit=limit, cursor=cursor)


def jobs_page(services, tenant: str, kind: str, *, status: JobStatus | None, limit: int, cursor: int) -> JobsPublic:
    """One page of this tenant's jobs of one kind, newest first."""
    records, next_cursor = services.store.list(tenant, status=status, limit=limit, cursor=cursor, kind=kind)
    return JobsPublic(jobs=[JobPublic.of(r) for r in records], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_merge(job_id: str, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    """One job by id (any kind: an init job's id works here too, and under `/v1/inits`)."""
    record = services.store.get(job_id, tenant=tenant)
    if record is None:
        raise not_found(job_id)
    return JobPublic.of(record)


@router.delete("/{job_id}", status_code=202, response_model=JobPublic)
def cancel_merge(
    job_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    response: Response,
    purge: Annotated[bool, Query(description="Delete a finished job's stored result (200); the record stays, `purged`.")] = False,
) -> JobPublic:
    """Cancel: a queued job never runs; a running one stops at its next check (within seconds, at most
    `LORAMERGE_CANCEL_GRACE_S` later) and leaves no result. With `purge=true`: delete the result a
    finished job left in the local store (results pushed to the Hub or S3 are yours and stay); the job
    then shows `purged: true` and its artifact answers 410."""
    if purge:
        return _purge(job_id, services, tenant, response)
    record = services.store.request_cancel(job_id, tenant=tenant)
    if record is None:
        raise not_found(job_id)
    if record.status in (JobStatus.succeeded, JobStatus.failed):
        raise ApiError(ErrorCode.job_finished, f"job {job_id} already {record.status.value}", job_status=record.status.value)
    return JobPublic.of(record)


def _purge(job_id: str, services, tenant: str, response: Response) -> JobPublic:
    current = services.store.get(job_id, tenant=tenant)
    if current is None:
        raise not_found(job_id)
    if current.result is not None and not current.result.uri.startswith("file://"):
        raise ApiError(
            ErrorCode.result_not_local,
            f"job {job_id}'s result is at {current.result.uri}, in your repository or bucket: delete it there",
        )
    record = services.store.mark_purged(job_id, by="tenant", tenant=tenant)
    if record is None:
        raise not_found(job_id)
    if not record.status.terminal:
        raise ApiError(
            ErrorCode.job_not_finished,
            f"job {job_id} is {record.status.value}; cancel it first (DELETE without purge), then purge it once it has ended",
            job_status=record.status.value,
        )
    try:
        removed = remove_local_result(record.result.uri if record.result else None, services.settings.results_dir)
    except OSError as exc:  # recorded as purged: the workers' retention sweep removes what is left
        log.warning(
            "job %s: purge left files behind (%s); retention removes them", job_id, exc.strerror or exc,
            extra={"job_id": job_id, "tenant": tenant, "attempt": record.attempts},
        )  # fmt: skip
    else:
        if removed:
            context = {"job_id": job_id, "tenant": tenant, "attempt": record.attempts}
            log.info("job %s: result purged by its tenant", job_id, extra=context)
    response.status_code = 200
    return JobPublic.of(record)


@router.get("/{job_id}/artifact", response_class=StreamingResponse, responses={200: {"content": {"application/x-tar": {}}}})
def download_artifact(job_id: str, services: ServicesDep, tenant: TenantDep) -> StreamingResponse:
    """The result folder as a tar stream (results in the local store only)."""
    record = services.store.get(job_id, tenant=tenant)
    if record is None:
        raise not_found(job_id)
    if record.purged_at is not None:
        raise ApiError(
            ErrorCode.result_purged,
            f"job {job_id}'s result was deleted (purged by {record.purged_by} at {JobPublic.of(record).purged_at:%Y-%m-%dT%H:%M:%SZ})",
        )
    if record.status != JobStatus.succeeded or record.result is None:
        raise ApiError(ErrorCode.job_not_succeeded, f"job {job_id} is {record.status.value}; artifacts exist for succeeded jobs")
    folder = local_folder_of(record.result.uri, services.settings.results_dir)
    if folder is None or not folder.is_dir():
        raise ApiError(ErrorCode.artifact_not_local, f"the result is at {record.result.uri}; download it from there")
    return StreamingResponse(
        tar_folder(Path(folder), f"loramerge-{job_id}"),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="loramerge-{job_id}.tar"'},
    )
