"""JobStore on the real Redis: atomic transitions, stale-running guard, TTL of finished records."""

from __future__ import annotations

from jobs.records import JobRecord, JobStatus, now
from jobs.store import JobStore, connect


def _store(stack, ttl=600) -> JobStore:
    return JobStore(connect(stack.settings.redis_url), finished_ttl_s=ttl)


def _new(store: JobStore, tenant="store-test") -> JobRecord:
    record, created = store.create(JobRecord(tenant=tenant, spec={"method": "x"}, queue="nowhere"), max_queued=10_000)
    assert created
    return record


def test_only_one_transition_wins(stack):
    store = _store(stack)
    record = _new(store)
    _, first = store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued})
    _, second = store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued})
    assert (first, second) == (True, False)
    assert record.id in store.ids_in(JobStatus.running) and record.id not in store.ids_in(JobStatus.queued)


def test_finished_records_expire_and_drop_the_token(stack):
    store = _store(stack, ttl=120)
    record = _new(store)
    store.update(record.id, lambda r: setattr(r, "hub_token_enc", "sealed") or True)
    done, moved = store.transition(record.id, JobStatus.failed, allowed_from={JobStatus.queued})
    assert moved and done.hub_token_enc is None and done.finished_at is not None
    assert 0 < store.redis.ttl(store.job_key(record.id)) <= 120
    assert record.id not in store.ids_in(JobStatus.queued)


def test_stale_running_jobs_fail_as_worker_lost(stack):
    store = _store(stack)
    stale, fresh = _new(store), _new(store)
    for record in (stale, fresh):
        store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued})
    store.redis.set(
        store.job_key(stale.id), store.get(stale.id).model_copy(update={"updated_at": now() - 7200}).model_dump_json()
    )
    assert store.fail_stale(3600) == [stale.id]
    assert store.get(stale.id).error.code == "worker_lost"
    assert store.get(fresh.id).status == JobStatus.running
    store.transition(fresh.id, JobStatus.cancelled, allowed_from={JobStatus.running})
