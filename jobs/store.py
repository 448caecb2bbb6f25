"""Job records in Redis, with atomic state transitions.

Layout (prefix ``lm:``):
  job:{id}              the JobRecord as JSON; expires ``finished_job_ttl_s`` after the job ends
  tenant:{tenant}       sorted set of the tenant's job ids by creation time (listing)
  state:queued|running  sets of live job ids (queue bound, metrics, stuck-job checks)
  idem:{tenant}:{hash}  Idempotency-Key -> "job_id fingerprint"
  finished              hash status -> jobs that ended in it (Prometheus counter)
  duration              hash of cumulative histogram buckets of job run time

Creation is one Lua script (idempotency claim + queue bound + record), transitions are
WATCH/MULTI transactions, so two workers or a worker and a cancel never both win.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import redis

from jobs.lease import holder_is_gone
from jobs.records import TERMINAL, JobError, JobProgress, JobRecord, JobStatus, now

T = TypeVar("T")
PREFIX = "lm:"
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

    def __init__(self, client: redis.Redis, *, finished_ttl_s: int, outage_grace_s: float = 0.0) -> None:
        self.redis = client
        self.finished_ttl_s = finished_ttl_s
        self.outage_grace_s = outage_grace_s
        self._create = client.register_script(_CREATE)

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
        outcome, value = self._create(
            keys=[idem_key, self.job_key(record.id), self._tenant_key(record.tenant), self._state_key(JobStatus.queued)],
            args=[record.id, fingerprint, record.model_dump_json(), record.created_at, max_queued, self.finished_ttl_s],
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

    def list(self, tenant: str, *, status: JobStatus | None, limit: int, cursor: int) -> tuple[list[JobRecord], int | None]:
        """Newest first. ``cursor`` is an offset into the tenant's index; None as next cursor = no more."""
        index = self._tenant_key(tenant)
        found: list[JobRecord] = []
        position = cursor
        page = max(limit, 100)
        while len(found) < limit:
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
                position += 1
                record = JobRecord.model_validate_json(raw)
                if status is None or record.status == status:
                    found.append(record)
                    if len(found) == limit:
                        break
        return found, position

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
                    before = record.status
                    if not mutate(record):
                        pipe.unwatch()
                        return record
                    record.updated_at = now()
                    pipe.multi()
                    self._write(pipe, record, before)
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue

    def _write(self, pipe, record: JobRecord, before: JobStatus) -> None:
        key = self.job_key(record.id)
        if record.status != before:
            for status in (JobStatus.queued, JobStatus.running):
                if status == before:
                    pipe.srem(self._state_key(status), record.id)
                if status == record.status:
                    pipe.sadd(self._state_key(status), record.id)
        if record.status in TERMINAL and before not in TERMINAL:
            record.finished_at = record.finished_at or now()
            record.hub_token_enc = None
            pipe.hincrby(f"{PREFIX}finished", record.status.value, 1)
            pipe.set(key, record.model_dump_json(), ex=self.finished_ttl_s)
        else:
            pipe.set(key, record.model_dump_json(), keepttl=True)

    def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: Iterable[JobStatus], **changes
    ) -> tuple[JobRecord | None, bool]:
        """Move the job to ``to`` if it is in ``allowed_from``. Returns (record, moved)."""
        allowed = frozenset(allowed_from)
        moved = False

        def mutate(record: JobRecord) -> bool:
            nonlocal moved
            if record.status not in allowed:
                return False
            record.status = to
            for name, value in changes.items():
                setattr(record, name, value)
            moved = True
            return True

        record = self.update(job_id, mutate)
        return record, moved

    def recover_lost(self, *, lease_s: float, max_attempts: int, requeue: Callable[[JobRecord], None]) -> list[str]:
        """Running jobs whose worker is gone (see jobs.lease) go back to the queue, or fail as
        ``worker_lost`` once their attempts are spent. The guard against a record stuck in ``running``
        when a whole worker dies (its message would only come back after the visibility timeout)."""
        recovered = []
        changed = False  # set by the last (committed) call of mutate for the current job

        def mutate(record: JobRecord) -> bool:
            nonlocal changed
            changed = record.status == JobStatus.running and holder_is_gone(record, lease_s)
            if not changed:
                return False
            if record.attempts >= max_attempts:
                record.status = JobStatus.failed
                record.error = JobError(code="worker_lost", message=f"the worker was lost {record.attempts} times; giving up")
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

    # -- metrics ------------------------------------------------------------------------------
    def observe_duration(self, status: JobStatus, seconds: float) -> None:
        self._patiently(lambda: self._observe_once(status, seconds))

    def _observe_once(self, status: JobStatus, seconds: float) -> None:
        key = f"{PREFIX}duration:{status.value}"
        with self.redis.pipeline(transaction=True) as pipe:
            for bound in DURATION_BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(key, _bucket_field(bound), 1)
            pipe.hincrbyfloat(key, "sum", seconds)
            pipe.hincrby(key, "count", 1)
            pipe.execute()

    def durations(self, status: JobStatus) -> tuple[list[tuple[str, int]], float]:
        raw = self.redis.hgetall(f"{PREFIX}duration:{status.value}")
        buckets = [(_bucket_field(b), int(raw.get(_bucket_field(b), 0))) for b in DURATION_BUCKETS]
        return buckets, float(raw.get("sum", 0.0))


def _bucket_field(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
