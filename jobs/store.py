"""Job records in Redis, with atomic state transitions.

Layout (prefix ``lm:``):
  job:{id}              the JobRecord as JSON; expires ``finished_job_ttl_s`` after the job ends
  tenant:{tenant}       sorted set of the tenant's job ids by creation time (listing)
  state:queued|running  sets of live job ids (queue bound, metrics, stuck-job checks)
  idem:{tenant}:{hash}  Idempotency-Key -> "job_id fingerprint"
  finished              hash status -> jobs that ended in it (Prometheus counter)
  duration:{status}     hash of cumulative histogram buckets of job run time
  tokens-dropped        set when a job's encrypted Hub token left its record (see scrub_tokens)
  events:{id}           the job's event log, a stream (jobs.events); expires with the record
  wh:outbox, wh:delivery:{msg}, wh:job:{id}   webhook deliveries queued by the same writes (jobs.webhooks)

Creation is one Lua script (idempotency claim + queue bound + record), transitions are
WATCH/MULTI transactions, so two workers or a worker and a cancel never both win. A worker's writes
are named operations (``claim``, ``refresh_lease``, ``set_progress``, ``set_sources``, ``set_base_model``,
``cancel_requested``, ``requeue``, ``finish``) that take the attempt's :class:`~jobs.lease.Fence`
and raise :class:`~jobs.lease.LeaseLostError` when the record moved on without it. Every terminal
write, whoever makes it, counts the job, records its duration, sets the TTL and drops the token in
the same transaction. Every write also appends the events it makes to the job's log and queues the
webhook deliveries they call for (``jobs.events``), inside that same transaction; ``on_deliveries``
is told their ids once it committed (to send their tasks at once; the webhook worker's sweep sends
those whose task never left).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from jobs import events
from jobs.errors import ErrorCode
from jobs.lease import Fence, LeaseLostError, attempts_spent, holder_is_gone
from jobs.records import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransitionError,
    JobError,
    JobProgress,
    JobRecord,
    JobStatus,
    PinnedSource,
    now,
)

T = TypeVar("T")
log = logging.getLogger("loramerge.store")
PREFIX = "lm:"
TOKENS_DROPPED_KEY = f"{PREFIX}tokens-dropped"
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))

_CREATE = """
if KEYS[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {'existing', existing} end
end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[5]) then return {'full', ''} end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[6]) end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'type', 'job.accepted', 'at', ARGV[4], 'data', ARGV[7])
local deliveries = cjson.decode(ARGV[9])
for _, d in ipairs(deliveries) do
  redis.call('SET', KEYS[7] .. d['id'], d['json'], 'EX', ARGV[6])
  redis.call('ZADD', KEYS[6], d['at'], d['id'])
  redis.call('RPUSH', KEYS[8], d['id'])
end
return {'created', ARGV[1]}
"""


class QueueFullError(Exception):
    """More jobs are queued than ``max_queued_jobs``."""


class IdempotencyConflictError(Exception):
    """The Idempotency-Key was used before with a different request body."""


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


class JobStore:
    """``outage_grace_s`` > 0 (workers): reads and transitions wait that long for Redis to come back
    (a restart) instead of failing, so a finished merge still gets recorded. The API keeps 0 and
    answers 503 at once."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        finished_ttl_s: int,
        outage_grace_s: float = 0.0,
        progress_event_interval_s: float = 5.0,
        on_deliveries: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.redis = client
        self.finished_ttl_s = finished_ttl_s
        self.outage_grace_s = outage_grace_s
        self.progress_event_interval_s = progress_event_interval_s
        self.on_deliveries = on_deliveries
        self._create = client.register_script(_CREATE)

    def _announce(self, delivery_ids: list[str]) -> None:
        """Best effort: a delivery whose task is not sent here is sent by the webhook worker's sweep."""
        if not delivery_ids or self.on_deliveries is None:
            return
        try:
            self.on_deliveries(delivery_ids)
        except Exception as exc:
            log.warning("webhook deliveries %s not sent now (%s); the outbox sweep sends them", delivery_ids, type(exc).__name__)

    def _patiently(self, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.outage_grace_s
        delay = 0.1
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- keys ---------------------------------------------------------------------------------
    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _state_key(status: JobStatus) -> str:
        return f"{PREFIX}state:{status.value}"

    @staticmethod
    def _tenant_key(tenant: str) -> str:
        return f"{PREFIX}tenant:{tenant}"

    # -- create / read ------------------------------------------------------------------------
    def create(
        self, record: JobRecord, *, max_queued: int, idempotency_key: str | None = None, fingerprint: str = ""
    ) -> tuple[JobRecord, bool]:
        """Store a new queued job. Returns (record, created); created is False for a repeated Idempotency-Key."""
        idem_key = ""
        if idempotency_key is not None:
            idem_key = f"{PREFIX}idem:{record.tenant}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
        out = events.emission(None, record, progress_interval_s=self.progress_event_interval_s)
        (_, accepted), *_ = out.events
        deliveries = [{"id": d["id"], "json": json.dumps(d), "at": d["created_at"]} for d in out.deliveries]
        outcome, value = self._create(
            keys=[
                idem_key,
                self.job_key(record.id),
                self._tenant_key(record.tenant),
                self._state_key(JobStatus.queued),
                events.events_key(record.id),
                events.OUTBOX_KEY,
                events.delivery_key(""),
                events.job_deliveries_key(record.id),
            ],
            args=[
                record.id,
                fingerprint,
                record.model_dump_json(),
                record.created_at,
                max_queued,
                self.finished_ttl_s,
                json.dumps(accepted),
                events.STREAM_MAXLEN,
                json.dumps(deliveries) if deliveries else "[]",
            ],
        )
        if outcome == "full":
            raise QueueFullError()
        if outcome == "existing":
            job_id, _, stored_fingerprint = value.partition(" ")
            if stored_fingerprint != fingerprint:
                raise IdempotencyConflictError()
            existing = self.get(job_id)
            if existing is None:  # expired with its record: the key is free again
                self.redis.delete(idem_key)
                return self.create(record, max_queued=max_queued, idempotency_key=idempotency_key, fingerprint=fingerprint)
            return existing, False
        self._announce(out.delivery_ids)
        return record, True

    def get(self, job_id: str, *, tenant: str | None = None, patient: bool = True) -> JobRecord | None:
        read = lambda: self.redis.get(self.job_key(job_id))  # noqa: E731
        raw = self._patiently(read) if patient else read()
        if raw is None:
            return None
        record = JobRecord.model_validate_json(raw)
        if tenant is not None and record.tenant != tenant:
            return None
        return record

    def list(
        self, tenant: str, *, status: JobStatus | None, limit: int, cursor: int, kind: str | None = None
    ) -> tuple[list[JobRecord], int | None]:
        """Newest first. ``cursor`` is an offset into the tenant's index; the next cursor is the offset of
        the next matching job, None when there is none (so a last page never points at an empty one).
        ``kind``: only merge or init jobs (one index holds both)."""
        index = self._tenant_key(tenant)
        found: list[JobRecord] = []
        position = cursor
        page = max(limit, 100)
        while True:
            ids = self.redis.zrevrange(index, position, position + page - 1)
            if not ids:
                return found, None
            raws = self.redis.mget([self.job_key(i) for i in ids])
            gone = [job_id for job_id, raw in zip(ids, raws) if raw is None]
            if gone:
                self.redis.zrem(index, *gone)  # expired records; later offsets shift down by one each
            for raw in raws:
                if raw is None:
                    continue
                record = JobRecord.model_validate_json(raw)
                if (status is None or record.status == status) and (kind is None or record.kind == kind):
                    if len(found) == limit:
                        return found, position  # one more matches: the next page starts at it
                    found.append(record)
                position += 1

    def count(self, status: JobStatus) -> int:
        return self.redis.scard(self._state_key(status))

    def ids_in(self, status: JobStatus) -> set[str]:
        return self.redis.smembers(self._state_key(status))

    def finished_totals(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.redis.hgetall(f"{PREFIX}finished").items()}

    # -- transitions --------------------------------------------------------------------------
    def update(self, job_id: str, mutate: Callable[[JobRecord], bool], *, patient: bool = True) -> JobRecord | None:
        """Apply ``mutate`` atomically. It returns False to leave the record unchanged; returns the stored record.
        ``patient=False`` skips the outage wait (progress lines that the next one replaces)."""
        if not patient:
            return self._update_once(job_id, mutate)
        return self._patiently(lambda: self._update_once(job_id, mutate))

    def _update_once(self, job_id: str, mutate: Callable[[JobRecord], bool]) -> JobRecord | None:
        key = self.job_key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        return None
                    record = JobRecord.model_validate_json(raw)
                    old = record.model_copy(deep=True)
                    if not mutate(record):
                        pipe.unwatch()
                        return record
                    record.updated_at = now()
                    pipe.multi()
                    out = self._write(pipe, record, old)
                    pipe.execute()
                    self._announce(out.delivery_ids)
                    return record
                except redis.WatchError:
                    continue

    def _write(self, pipe, record: JobRecord, old: JobRecord) -> events.Emission:
        """The one write of a changed record: state sets, terminal bookkeeping, events and webhooks."""
        before = old.status
        purge = record.status == before and before in TERMINAL and record.purged_at is not None and old.purged_at is None
        if record.status not in TRANSITIONS[before] and not (record.status == before and before not in TERMINAL) and not purge:
            raise InvalidTransitionError(f"job {record.id}: {before.value} -> {record.status.value} is not a transition")
        key = self.job_key(record.id)
        if record.status != before:
            for status in (JobStatus.queued, JobStatus.running):
                if status == before:
                    pipe.srem(self._state_key(status), record.id)
                if status == record.status:
                    pipe.sadd(self._state_key(status), record.id)
        if record.status in TERMINAL and before not in TERMINAL:
            record.finished_at = record.finished_at or now()
            if record.hub_token_enc is not None:
                record.hub_token_enc = None
                pipe.set(TOKENS_DROPPED_KEY, record.finished_at)
            record.not_before = None
            pipe.hincrby(f"{PREFIX}finished", record.status.value, 1)
            self._observe(pipe, record.status, record.finished_at - (record.started_at or record.finished_at))
        terminal = record.status in TERMINAL and before not in TERMINAL
        out = events.emission(old, record, progress_interval_s=self.progress_event_interval_s)
        if terminal:
            pipe.set(key, record.model_dump_json(), ex=self.finished_ttl_s)
        else:
            pipe.set(key, record.model_dump_json(), keepttl=True)
        events.write(pipe, record.id, out, ttl_s=self.finished_ttl_s, terminal=terminal)
        return out

    def fail_unsent(self, job_id: str, error: JobError) -> JobRecord | None:
        """queued -> failed when the job's message could not be sent (the API answers 503)."""

        def mutate(record: JobRecord) -> bool:
            if record.status != JobStatus.queued:
                return False
            record.status, record.error = JobStatus.failed, error
            return True

        return self.update(job_id, mutate)

    # -- a worker's operations, fenced -------------------------------------------------------
    def claim(self, job_id: str, me: str, *, lease_s: float, device: str | None = None) -> JobRecord | None:
        """queued -> running, or take over a running job whose holder is gone (jobs.lease).
        Returns the claimed record (its ``attempts`` and ``worker`` are the new fence), or None when
        there is nothing to run (finished, cancelled, unknown, or running under a live holder)."""

        def mutate(record: JobRecord) -> bool:
            if record.status == JobStatus.running and not holder_is_gone(record, lease_s):
                return False
            if record.status not in (JobStatus.queued, JobStatus.running):
                return False
            record.status = JobStatus.running
            record.attempts += 1
            record.worker = me
            record.device = device
            record.attempt_started_at = now()
            record.not_before = None
            record.started_at = record.started_at or record.attempt_started_at
            record.progress = JobProgress(stage="fetch", done=0, total=len(record.spec.get("adapters", [])))
            return True

        record = self.update(job_id, mutate)
        if record is None or record.status != JobStatus.running or record.worker != me:
            return None
        return record

    def _fenced(self, job_id: str, fence: Fence, change: Callable[[JobRecord], None], *, patient: bool = True) -> JobRecord:
        """Apply ``change`` only while ``fence`` holds the job; LeaseLostError otherwise."""
        lost: list[JobRecord | None] = []

        def mutate(record: JobRecord) -> bool:
            lost.clear()
            if not fence.holds(record):
                lost.append(record)
                return False
            change(record)
            return True

        record = self.update(job_id, mutate, patient=patient)
        if record is None or lost:
            raise LeaseLostError(job_id, fence, record)
        return record

    def refresh_lease(self, job_id: str, fence: Fence, *, patient: bool = False) -> JobRecord:
        """Touch ``updated_at`` (done by every write). Returns the record: ``cancel_requested`` rides along.
        ``patient``: wait out a Redis restart (the check before publishing), instead of failing at once."""
        return self._fenced(job_id, fence, lambda record: None, patient=patient)

    def set_progress(self, job_id: str, fence: Fence, progress: JobProgress) -> None:
        self._fenced(job_id, fence, lambda record: setattr(record, "progress", progress), patient=False)

    def set_sources(self, job_id: str, fence: Fence, sources: list[PinnedSource]) -> None:
        self._fenced(job_id, fence, lambda record: setattr(record, "sources", list(sources)))

    def set_base_model(self, job_id: str, fence: Fence, base_model: PinnedSource) -> None:
        self._fenced(job_id, fence, lambda record: setattr(record, "base_model", base_model))

    def cancel_requested(self, job_id: str, fence: Fence) -> bool:
        """Has a client asked to cancel this attempt's job? Raises LeaseLostError if the attempt lost it."""
        record = self.get(job_id, patient=False)
        if record is None or not fence.holds(record):
            raise LeaseLostError(job_id, fence, record)
        return record.cancel_requested

    def requeue(self, job_id: str, fence: Fence, *, progress: JobProgress, not_before: float | None = None) -> JobRecord:
        """running -> queued for another attempt (a transient error's retry)."""

        def change(record: JobRecord) -> None:
            record.status, record.progress, record.worker, record.not_before = JobStatus.queued, progress, None, not_before

        return self._fenced(job_id, fence, change)

    def finish(self, job_id: str, fence: Fence, status: JobStatus, **changes) -> JobRecord:
        """running -> a terminal status, with ``changes`` (error, result, progress)."""
        assert status in TERMINAL

        def change(record: JobRecord) -> None:
            record.status = status
            for name, value in changes.items():
                setattr(record, name, value)

        return self._fenced(job_id, fence, change)

    def request_cancel(self, job_id: str, *, tenant: str) -> JobRecord | None:
        """A client's cancel: a queued job ends at once; a running one is flagged for its worker."""

        def mutate(record: JobRecord) -> bool:
            if record.tenant != tenant:
                return False
            if record.status == JobStatus.queued:
                record.status = JobStatus.cancelled
                record.progress = JobProgress(stage="cancelled")
                return True
            if record.status == JobStatus.running and not record.cancel_requested:
                record.cancel_requested = True
                return True
            return False

        record = self.update(job_id, mutate)
        return record if record is not None and record.tenant == tenant else None

    def mark_purged(self, job_id: str, *, by: str, tenant: str | None = None) -> JobRecord | None:
        """Record that a finished job's stored files are being deleted (the only write to an ended
        record; it keeps its TTL). ``tenant`` set: only that tenant's job. Returns the record (None:
        unknown, another tenant's); a job not yet ended comes back unchanged, its status says so."""

        def mutate(record: JobRecord) -> bool:
            if (tenant is not None and record.tenant != tenant) or not record.status.terminal or record.purged_at:
                return False
            record.purged_at, record.purged_by = now(), by
            return True

        record = self.update(job_id, mutate)
        return None if record is None or (tenant is not None and record.tenant != tenant) else record

    # -- sweeps (run by every worker's housekeeping) ----------------------------------------
    def recover_lost(
        self,
        *,
        lease_s: float,
        max_attempts: int,
        time_limit_s: float,
        requeue: Callable[[JobRecord], None],
        refund_attempt: bool = False,
    ) -> list[str]:
        """Running jobs whose worker is gone (see jobs.lease) go back to the queue, or fail as
        ``worker_lost`` once their attempts are spent, or as ``time_limit_exceeded`` when the attempt
        outlived the hard time limit (its process was killed for it). The guard against a record stuck
        in ``running`` when a whole worker dies (its message would only come back after the
        visibility timeout). ``refund_attempt``: the workers were stopped on purpose (``serve``
        shutting down), so the interrupted attempt does not count."""
        recovered = []
        changed = False  # set by the last (committed) call of mutate for the current job

        def mutate(record: JobRecord) -> bool:
            nonlocal changed
            changed = record.status == JobStatus.running and holder_is_gone(record, lease_s)
            if not changed:
                return False
            ran_s = now() - (record.attempt_started_at or record.updated_at)
            if ran_s >= time_limit_s:
                record.status = JobStatus.failed
                record.error = JobError(
                    code=ErrorCode.time_limit_exceeded,
                    message=f"the attempt ran {ran_s:.0f} s, past the hard limit of {time_limit_s:.0f} s "
                    "(LORAMERGE_JOB_TIME_LIMIT_S); its process was stopped",
                )
            elif refund_attempt:
                record.status = JobStatus.queued
                record.attempts = max(record.attempts - 1, 0)
                record.progress = JobProgress(stage="requeued: the service was stopped")
            elif attempts_spent(record, max_attempts):
                record.status = JobStatus.failed
                record.error = JobError(
                    code=ErrorCode.worker_lost, message=f"the worker was lost {record.attempts} times; giving up"
                )
            else:
                record.status = JobStatus.queued
                record.progress = JobProgress(stage="requeued: worker lost")
            record.worker = None
            return True

        for job_id in self.ids_in(JobStatus.running):
            changed = False  # stays False when the record is gone and mutate never runs
            record = self.update(job_id, mutate)
            if changed:
                recovered.append(job_id)
                if record.status == JobStatus.queued:
                    requeue(record)
        return recovered

    def recover_stranded(
        self, *, older_than_s: float, waiting: Callable[[str], set[str]], requeue: Callable[[JobRecord], None]
    ) -> list[str]:
        """Queued jobs whose message is in no broker queue (lost with a Redis crash, or stuck in the
        broker's unacked hash with a consumer that died with its connection) and that nobody has
        touched for ``older_than_s`` get a new message. ``waiting(queue)`` gives the ids of the jobs
        whose message waits in ``queue``. A duplicate message is harmless: ``claim`` lets one
        delivery run the job, and the others find it running or finished."""
        sent = []
        waiting_in: dict[str, set[str]] = {}
        ids = sorted(self.ids_in(JobStatus.queued))
        raws = self.redis.mget([self.job_key(job_id) for job_id in ids]) if ids else []
        for job_id, raw in zip(ids, raws):
            record = JobRecord.model_validate_json(raw) if raw is not None else None
            if record is None or record.status != JobStatus.queued:
                continue
            if now() - max(record.updated_at, record.not_before or 0.0) <= older_than_s:
                continue
            if record.queue not in waiting_in:
                waiting_in[record.queue] = waiting(record.queue)
            if job_id in waiting_in[record.queue]:
                continue
            stranded = False

            def mutate(current: JobRecord, seen: float = record.updated_at) -> bool:
                nonlocal stranded  # unchanged since it was read: no worker or client touched it meanwhile
                stranded = current.status == JobStatus.queued and current.updated_at == seen
                if stranded:
                    current.progress = JobProgress(stage="queued: message re-sent")
                return stranded

            current = self.update(job_id, mutate)
            if stranded and current is not None:
                requeue(current)
                sent.append(job_id)
        return sent

    def scrub_tokens(self) -> bool:
        """Rewrite the append-only file once a job's encrypted Hub token left its record, so that no
        token outlives its job on disk (the old AOF still holds the SETs that carried it). Returns
        True when a rewrite was started. A Redis without AOF has no such file: the flag is dropped. One
        that refuses CONFIG or BGREWRITEAOF (a rewrite already running, some managed services) keeps
        the flag, so the next sweep tries again."""
        if self.redis.getdel(TOKENS_DROPPED_KEY) is None:
            return False
        try:
            if self.redis.config_get("appendonly").get("appendonly") != "yes":
                return False
            self.redis.bgrewriteaof()
        except redis.ResponseError:
            self.redis.set(TOKENS_DROPPED_KEY, now())  # a rewrite already running: try again next sweep
            return False
        return True

    # -- metrics ------------------------------------------------------------------------------
    def _observe(self, pipe, status: JobStatus, seconds: float) -> None:
        key = f"{PREFIX}duration:{status.value}"
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(key, _bucket_field(bound), 1)
        pipe.hincrbyfloat(key, "sum", max(seconds, 0.0))
        pipe.hincrby(key, "count", 1)

    def durations(self, status: JobStatus) -> tuple[list[tuple[str, int]], float]:
        raw = self.redis.hgetall(f"{PREFIX}duration:{status.value}")
        buckets = [(_bucket_field(b), int(raw.get(_bucket_field(b), 0))) for b in DURATION_BUCKETS]
        return buckets, float(raw.get("sum", 0.0))


def _bucket_field(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
