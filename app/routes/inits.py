"""/v1/inits: OSRM initialisation jobs (merge-ready LoRA starting points, one adapter per task).

The same job machinery as merges: one record store (``JobRecord.kind == "init"``), one queue, one
worker task, the same events, webhooks and error shape. Reading, cancelling and downloading a job
are the merge routes' own handlers mounted here too; the list shows init jobs only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.deps import ServicesDep, TenantDep
from app.errors import ApiError
from app.routes import events, merges
from app.routes.merges import HubToken, IdempotencyKey
from app.schemas import ERROR_RESPONSES, InitCreate, JobPublic, JobsPublic
from app.submission import init_fingerprint, needs_hub_init, notify_target, stored_init_spec, validate_init_submission
from jobs.errors import ErrorCode
from jobs.queue import route_init
from jobs.records import JobRecord, JobStatus
from jobs.store import IdempotencyConflictError, QueueFullError

PREFIX = "/v1/inits"
router = APIRouter(prefix=PREFIX, tags=["inits"], responses=ERROR_RESPONSES)


@router.post("", status_code=202, response_model=JobPublic)
def create_init(
    body: InitCreate,
    response: Response,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
    hub_token: HubToken = None,
) -> JobPublic:
    """Validate an OSRM initialisation and queue it; answers at once with the job and a `Location` to poll.
    The result is one PEFT LoRA adapter folder per task (`lora_B = 0`), to train from."""
    validate_init_submission(body, services.settings)
    record = JobRecord(
        tenant=tenant,
        kind="init",
        spec=stored_init_spec(body),
        queue=route_init(services.settings),
        notify=notify_target(body, tenant, services.settings),
    )
    if hub_token and needs_hub_init(body):
        record.hub_token_enc = services.tokens.seal(hub_token)
    try:
        record, created = services.store.create(
            record,
            max_queued=services.settings.max_queued_jobs,
            idempotency_key=idempotency_key,
            fingerprint=init_fingerprint(body),
        )
    except QueueFullError:
        retry = str(services.settings.retry_after_s)
        raise ApiError(ErrorCode.queue_full, f"the queue is full; retry in {retry} s", headers={"Retry-After": retry}) from None
    except IdempotencyConflictError:
        raise ApiError(ErrorCode.idempotency_key_reused, "this Idempotency-Key was used with a different request body") from None
    if created:
        merges._enqueue(services, record)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"{PREFIX}/{record.id}"
    return JobPublic.of(record)


@router.get("", response_model=JobsPublic)
def list_inits(
    services: ServicesDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsPublic:
    """This tenant's init jobs, newest first."""
    return merges.jobs_page(services, tenant, "init", status=status, limit=limit, cursor=cursor)


def _mount(source: APIRouter, source_prefix: str) -> None:
    """The per-job routes of ``source`` (read, cancel, artifact, events, deliveries) under /v1/inits."""
    for route in source.routes:
        path = route.path.removeprefix(source_prefix)
        if not path.startswith("/{job_id}"):
            continue
        router.add_api_route(
            path,
            route.endpoint,
            methods=sorted(route.methods),
            status_code=route.status_code,
            response_model=route.response_model,
            response_class=route.response_class,
            responses=route.responses,
            summary=route.summary,
            description=route.description,
            name=f"{route.name}_init",
            tags=["inits"],
        )


_mount(merges.router, merges.router.prefix)
_mount(events.router, events.router.prefix)
