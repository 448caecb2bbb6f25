"""A job's event log and the webhook deliveries its state changes queue, both written in the store's
own transaction (the ``_CREATE`` script or the MULTI of ``JobStore._write``), so no event is lost
between a state change and its record.

Log: one Redis stream per job, ``lm:events:{id}``; an entry's stream id is the cursor of
``GET /v1/merges/{id}/events`` and the SSE ``id:``. The stream expires with the job record.

Events are derived from the record before and after a write (``derive``):

- ``job.accepted``          created (queue, method)
- ``job.started``           claimed by a worker (attempt, worker), a take-over included
- ``job.source_pinned``     one more source fetched and pinned (index, source, revision)
- ``job.stage``             the progress stage changed (fetch, merge, orthogonalize, publish, ...): each one
- ``job.progress``          modules done/total changed, at most one per ``webhook_progress_interval_s``
                            after the job's last ``job.stage`` or ``job.progress`` (later ones are dropped)
- ``job.retrying``          another attempt follows (reason, attempt, not_before): back to the queue after a
                            transient error or a lost worker, or a worker took over a job whose holder is gone
                            (then right before that attempt's ``job.started``, reason ``worker lost``)
- ``job.cancel_requested``  a client asked a running job to stop
- ``job.succeeded`` | ``job.failed`` | ``job.cancelled``   the outcome (result or error)
- ``job.purged``            after the outcome: the job's stored files were deleted (by: tenant or retention)

Webhook event names (``notify.events``) map onto them: queued (accepted, retrying), started,
progress (stage, progress), succeeded, failed, cancelled. A job sends at most one ``progress`` webhook
per ``webhook_progress_interval_s``, whether a stage change or modules done called for it; one called
for sooner is dropped, not delayed (the next one, or the outcome, carries the job's state then).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.public import JobPublic
from jobs.records import TERMINAL, JobRecord, JobStatus, now

PREFIX = "lm:"
STREAM_MAXLEN = 10_000
OUTBOX_KEY = f"{PREFIX}wh:outbox"
CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_STREAM_PART = 2**64 - 1  # both parts of a Redis stream id are unsigned 64-bit integers

WEBHOOK_EVENT = {
    "job.accepted": "queued",
    "job.retrying": "queued",
    "job.started": "started",
    "job.stage": "progress",
    "job.progress": "progress",
    "job.succeeded": "succeeded",
    "job.failed": "failed",
    "job.cancelled": "cancelled",
}
TERMINAL_EVENTS = frozenset({"job.succeeded", "job.failed", "job.cancelled"})


def events_key(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def delivery_key(delivery_id: str) -> str:
    return f"{PREFIX}wh:delivery:{delivery_id}"


def job_deliveries_key(job_id: str) -> str:
    return f"{PREFIX}wh:job:{job_id}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Emission:
    """What one write adds: log entries and webhook deliveries (each a JSON document for the outbox)."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def delivery_ids(self) -> list[str]:
        return [d["id"] for d in self.deliveries]


def derive(old: JobRecord | None, new: JobRecord, *, progress_interval_s: float) -> list[tuple[str, dict[str, Any]]]:
    """The events of the write ``old -> new`` (``old`` None: the job was created). Sets
    ``new.progress_event_at`` when it logs a ``job.stage`` or ``job.progress`` event (coalescing)."""
    if old is None:
        return [("job.accepted", {"queue": new.queue, "method": new.spec.get("method", "")})]
    events: list[tuple[str, dict[str, Any]]] = []
    moved = new.status != old.status
    if new.status == JobStatus.running and old.status == JobStatus.running and new.attempts != old.attempts:
        # a take-over: the holder of the last attempt is gone (killed, frozen past its lease)
        events.append(
            ("job.retrying", {"reason": "worker lost", "attempt": old.attempts, "not_before": None, "worker": old.worker})
        )
    if new.status == JobStatus.running and (old.status != JobStatus.running or new.attempts != old.attempts):
        events.append(("job.started", {"attempt": new.attempts, "worker": new.worker}))
    for index in range(len(old.sources), len(new.sources)):
        pinned = new.sources[index]
        events.append(("job.source_pinned", {"index": index, "source": pinned.source, "revision": pinned.revision}))
    if new.cancel_requested and not old.cancel_requested:
        events.append(("job.cancel_requested", {}))
    if new.status == JobStatus.queued and old.status == JobStatus.running:
        events.append(("job.retrying", {"reason": new.progress.stage, "attempt": old.attempts, "not_before": new.not_before}))
    elif not moved and new.status not in TERMINAL and not events:
        progress = new.progress
        if progress.stage != old.progress.stage:
            events.append(("job.stage", progress.model_dump()))
            new.progress_event_at = now()
        elif (progress.done, progress.total) != (old.progress.done, old.progress.total):
            last = new.progress_event_at or 0.0
            if now() - last >= progress_interval_s:
                events.append(("job.progress", progress.model_dump()))
                new.progress_event_at = now()
    if new.purged_at is not None and old.purged_at is None:
        events.append(("job.purged", {"by": new.purged_by}))
    if new.status in TERMINAL and old.status not in TERMINAL:
        outcome: dict[str, Any] = {"status": new.status.value}
        if new.error is not None:
            outcome["error"] = new.error.model_dump()
        if new.result is not None:
            outcome["result"] = JobPublic.of(new).result.model_dump(mode="json")
        events.append((f"job.{new.status.value}", outcome))
    return events


def emission(old: JobRecord | None, new: JobRecord, *, progress_interval_s: float) -> Emission:
    """The events of a write and the webhook deliveries they call for (``new.notify``). Sets
    ``new.progress_webhook_at`` when it queues a ``progress`` webhook (coalescing)."""
    out = Emission(events=derive(old, new, progress_interval_s=progress_interval_s))
    if new.notify is None:
        return out
    wanted = set(new.notify.events)
    snapshot = None
    for kind, _ in out.events:
        webhook = WEBHOOK_EVENT.get(kind)
        if webhook is None or webhook not in wanted:
            continue
        if webhook == "progress":  # at most one per interval, for a stage change or modules done alike
            if now() - (new.progress_webhook_at or 0.0) < progress_interval_s:
                continue
            new.progress_webhook_at = now()
        snapshot = snapshot or JobPublic.of(new).model_dump(mode="json")
        msg_id = "msg_" + uuid.uuid4().hex
        created = now()
        body = {"type": f"job.{webhook}", "id": msg_id, "created_at": iso(created), "data": snapshot}
        out.deliveries.append(
            {
                "id": msg_id,
                "job_id": new.id,
                "tenant": new.tenant,
                "url": new.notify.url,
                "event": webhook,
                "type": body["type"],
                "created_at": created,
                "body": json.dumps(body, separators=(",", ":")),
                "state": "pending",
                "attempts": [],
                "next_attempt_at": created,
            }
        )
    return out


def write(pipe, job_id: str, out: Emission, *, ttl_s: int, terminal: bool) -> None:
    """Queue the emission's commands on ``pipe`` (inside the store's MULTI)."""
    stream = events_key(job_id)
    for kind, data in out.events:
        pipe.xadd(
            stream,
            {"type": kind, "at": repr(now()), "data": json.dumps(data, separators=(",", ":"))},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
    for delivery in out.deliveries:
        pipe.set(delivery_key(delivery["id"]), json.dumps(delivery), ex=ttl_s)
        pipe.zadd(OUTBOX_KEY, {delivery["id"]: delivery["created_at"]})
        pipe.rpush(job_deliveries_key(job_id), delivery["id"])
    if terminal:  # kept as long as the record, purged with it
        pipe.expire(stream, ttl_s)
        pipe.expire(job_deliveries_key(job_id), ttl_s)


# -- reading the log ------------------------------------------------------------------------------
def entry(stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    return {
        "id": stream_id,
        "type": fields.get("type", ""),
        "created_at": iso(float(fields.get("at", "0"))),
        "data": json.loads(fields.get("data", "{}")),
    }


def valid_cursor(value: str) -> bool:
    """A stream id Redis takes: ``ms-seq``, both parts unsigned 64-bit integers."""
    if not CURSOR.match(value):
        return False
    ms, _, seq = value.partition("-")
    return int(ms) <= MAX_STREAM_PART and int(seq) <= MAX_STREAM_PART


def after(cursor: str) -> str | None:
    """The smallest stream id greater than ``cursor`` (an exclusive start for XRANGE); None after the
    greatest id there is."""
    ms, seq = (int(part) for part in cursor.split("-", 1))
    if seq < MAX_STREAM_PART:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < MAX_STREAM_PART else None


def read(client, job_id: str, *, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Entries after ``cursor`` (all from the start when None), oldest first, and whether more follow."""
    start = after(cursor) if cursor else "-"
    if start is None:
        return [], False
    rows = client.xrange(events_key(job_id), min=start, max="+", count=limit + 1)
    return [entry(i, f) for i, f in rows[:limit]], len(rows) > limit
