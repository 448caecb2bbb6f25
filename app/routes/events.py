"""A job's event log (cursor pages, or Server-Sent Events) and its webhook deliveries.

``GET /v1/merges/{id}/events`` lists the log oldest first; ``after`` is the ``id`` of the last
event seen. With ``Accept: text/event-stream`` the same events stream as SSE (``id:``, ``event:``,
``data:``), resuming after ``Last-Event-ID``, with keep-alive comments, until the outcome's event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.deps import ServicesDep, TenantDep
from app.errors import ApiError, not_found
from app.schemas import ERROR_RESPONSES
from jobs import events
from jobs.errors import ErrorCode
from jobs.records import TERMINAL, JobRecord

router = APIRouter(prefix="/v1/merges", tags=["events"], responses=ERROR_RESPONSES)


class Event(BaseModel):
    id: str = Field(description="Stream cursor: pass as `after` (or `Last-Event-ID`) to read what follows.")
    type: str = Field(description="job.accepted, job.started, job.source_pinned, job.stage, job.progress, job.retrying, ...")
    created_at: str
    data: dict[str, Any]


class EventPage(BaseModel):
    data: list[Event]
    has_more: bool


class DeliveryAttempt(BaseModel):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None


class Delivery(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    type: str
    url: str
    state: str = Field(description="pending, succeeded, failed (retry window over) or gone (410)")
    created_at: datetime
    next_attempt_at: datetime | None = None
    attempts: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    data: list[Delivery]


def _cursor(value: str | None, field: str) -> str | None:
    if value is not None and not events.valid_cursor(value):
        raise ApiError(
            ErrorCode.invalid_request,
            f"{field}: not an event id (like 1717171717171-0: two integers of at most {events.MAX_STREAM_PART})",
            field=field,
        )
    return value


def _job(services, job_id: str, tenant: str) -> JobRecord:
    record = services.store.get(job_id, tenant=tenant)
    if record is None:
        raise not_found(job_id)
    return record


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
def list_events(
    job_id: str,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    after: Annotated[str | None, Query(max_length=42)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=42)] = None,
):
    """The job's events in order. `Accept: text/event-stream` streams them (SSE) until the outcome."""
    _job(services, job_id, tenant)
    cursor = _cursor(last_event_id, "Last-Event-ID") or _cursor(after, "after")
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(
            _sse(services, job_id, cursor),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    data, more = events.read(services.store.redis, job_id, cursor=cursor, limit=limit)
    return EventPage(data=[Event(**e) for e in data], has_more=more)


async def _sse(services, job_id: str, cursor: str | None):
    client = services.events_redis
    key = events.events_key(job_id)
    last = cursor or "0-0"
    keepalive_ms = int(services.settings.events_keepalive_s * 1000)
    yield "retry: 2000\n\n"
    while True:
        rows = await client.xread({key: last}, count=100, block=keepalive_ms)
        if not rows:
            raw = await client.get(services.store.job_key(job_id))
            if raw is None or JobRecord.model_validate_json(raw).status in TERMINAL:
                # the outcome's event is behind the cursor (or the job expired): nothing more will come
                if not await client.xread({key: last}, count=1):
                    return
                continue
            yield ": keep-alive\n\n"
            continue
        for stream_id, fields in rows[0][1]:
            item = events.entry(stream_id, fields)
            last = stream_id
            yield f"id: {stream_id}\nevent: {item['type']}\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"
            if item["type"] in events.TERMINAL_EVENTS:
                return


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@router.get("/{job_id}/deliveries", response_model=DeliveryList)
def list_deliveries(job_id: str, services: ServicesDep, tenant: TenantDep) -> DeliveryList:
    """The job's webhook deliveries, oldest first, with every attempt (time, status code, error)."""
    _job(services, job_id, tenant)
    return DeliveryList(
        data=[
            Delivery(
                id=d["id"],
                type=d["type"],
                url=d["url"],
                state=d["state"],
                created_at=_when(d["created_at"]),
                next_attempt_at=_when(d.get("next_attempt_at")) if d["state"] == "pending" else None,
                attempts=[
                    DeliveryAttempt(
                        at=_when(a["at"]),
                        status_code=a.get("status_code"),
                        error=a.get("error"),
                        duration_ms=a.get("duration_ms"),
                    )
                    for a in d["attempts"]
                ],
            )
            for d in services.outbox.for_job(job_id)
        ]
    )
