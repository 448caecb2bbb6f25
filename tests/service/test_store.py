"""JobStore on the real Redis: atomic transitions, stale-running guard, TTL of finished records."""

from __future__ import annotations

import socket
import subprocess

import pytest

from jobs.lease import worker_id
from jobs.records import JobRecord, JobStatus, now
from jobs.redis_server import RedisServer
from jobs.store import JobStore, connect


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A Redis of its own: the session's worker sweeps the shared one for lost jobs."""
    server = RedisServer(tmp_path_factory.mktemp("store-redis"))
    yield server.start()
    server.close()


def _store(url, ttl=600) -> JobStore:
    return JobStore(connect(url), finished_ttl_s=ttl)


def _new(store: JobStore, tenant="store-test") -> JobRecord:
    record, created = store.create(JobRecord(tenant=tenant, spec={"method": "x"}, queue="nowhere"), max_queued=10_000)
    assert created
    return record


def test_only_one_transition_wins(redis_url):
    store = _store(redis_url)
    record = _new(store)
    _, first = store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued})
    _, second = store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued})
    assert (first, second) == (True, False)
    assert record.id in store.ids_in(JobStatus.running) and record.id not in store.ids_in(JobStatus.queued)
    store.transition(record.id, JobStatus.cancelled, allowed_from={JobStatus.running})


def test_finished_records_expire_and_drop_the_token(redis_url):
    store = _store(redis_url, ttl=120)
    record = _new(store)
    store.update(record.id, lambda r: setattr(r, "hub_token_enc", "sealed") or True)
    done, moved = store.transition(record.id, JobStatus.failed, allowed_from={JobStatus.queued})
    assert moved and done.hub_token_enc is None and done.finished_at is not None
    assert 0 < store.redis.ttl(store.job_key(record.id)) <= 120
    assert record.id not in store.ids_in(JobStatus.queued)


def test_jobs_of_lost_workers_are_requeued_then_failed(redis_url):
    store = _store(redis_url)
    silent, dead_pid, spent, alive = (_new(store) for _ in range(4))
    for record in (silent, dead_pid, spent, alive):
        store.transition(record.id, JobStatus.running, allowed_from={JobStatus.queued}, attempts=1, worker=worker_id())
    store.update(silent.id, lambda r: setattr(r, "worker", "elsewhere:1") or True)
    store.redis.set(
        store.job_key(silent.id), store.get(silent.id).model_copy(update={"updated_at": now() - 600}).model_dump_json()
    )
    store.update(dead_pid.id, lambda r: setattr(r, "worker", f"{socket.gethostname()}:{_dead_pid()}") or True)
    store.update(spent.id, lambda r: setattr(r, "worker", "elsewhere:2") or setattr(r, "attempts", 3) or True)
    store.redis.set(store.job_key(spent.id), store.get(spent.id).model_copy(update={"updated_at": now() - 600}).model_dump_json())
    requeued = []
    recovered = store.recover_lost(lease_s=60, max_attempts=3, requeue=lambda r: requeued.append(r.id))
    assert sorted(recovered) == sorted([silent.id, dead_pid.id, spent.id])
    assert sorted(requeued) == sorted([silent.id, dead_pid.id])
    assert store.get(silent.id).status == JobStatus.queued and store.get(silent.id).worker is None
    assert store.get(spent.id).error.code == "worker_lost"
    assert store.get(alive.id).status == JobStatus.running  # this very process holds it
    for record in (silent, dead_pid, alive):
        store.transition(record.id, JobStatus.cancelled, allowed_from={JobStatus.queued, JobStatus.running})


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
