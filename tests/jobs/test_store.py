"""JobStore on the real Redis: atomic transitions, fenced worker writes, stale-running and stranded-queued
sweeps, TTL of finished records, every terminal write in the histogram, tokens scrubbed from the AOF."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from jobs.lease import Fence, LeaseLostError, worker_id
from jobs.records import InvalidTransitionError, JobError, JobProgress, JobRecord, JobStatus, now
from jobs.redis_server import RedisServer
from jobs.store import JobStore, connect


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Redis of its own: the session's worker sweeps the shared one for lost jobs."""
    server = RedisServer(tmp_path_factory.mktemp("store-redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_url(redis_server):
    return redis_server.url


def _store(url, ttl=600) -> JobStore:
    return JobStore(connect(url), finished_ttl_s=ttl)


def _new(store: JobStore, tenant="store-test") -> JobRecord:
    record, created = store.create(JobRecord(tenant=tenant, spec={"method": "x"}, queue="nowhere"), max_queued=10_000)
    assert created
    return record


def test_only_one_claim_wins(redis_url):
    store = _store(redis_url)
    record = _new(store)
    first = store.claim(record.id, "elsewhere:7", lease_s=60)
    second = store.claim(record.id, "elsewhere:8", lease_s=60)
    assert first is not None and second is None
    assert record.id in store.ids_in(JobStatus.running) and record.id not in store.ids_in(JobStatus.queued)
    store.finish(record.id, Fence(first.attempts, first.worker), JobStatus.cancelled)


def test_the_state_machine_refuses_arrows_it_does_not_have(redis_url):
    store = _store(redis_url)
    record = _new(store)
    with pytest.raises(InvalidTransitionError):  # queued -> succeeded skips running
        store.update(record.id, lambda r: setattr(r, "status", JobStatus.succeeded) or True)
    store.request_cancel(record.id, tenant="store-test")
    with pytest.raises(InvalidTransitionError):  # terminal is final
        store.update(record.id, lambda r: setattr(r, "status", JobStatus.queued) or True)
    with pytest.raises(InvalidTransitionError):
        store.update(record.id, lambda r: setattr(r, "progress", JobProgress(stage="x")) or True)
    assert store.get(record.id).status == JobStatus.cancelled


def test_finished_records_expire_and_drop_the_token(redis_url):
    store = _store(redis_url, ttl=120)
    record = _new(store)
    store.update(record.id, lambda r: setattr(r, "hub_token_enc", "sealed") or True)
    done = store.fail_unsent(record.id, JobError(code="enqueue_failed", message="m"))
    assert done.status == JobStatus.failed and done.hub_token_enc is None and done.finished_at is not None
    assert 0 < store.redis.ttl(store.job_key(record.id)) <= 120
    assert record.id not in store.ids_in(JobStatus.queued)


def test_jobs_of_lost_workers_are_requeued_then_failed(redis_url):
    store = _store(redis_url)
    silent, dead_pid, spent, alive = (_new(store) for _ in range(4))
    for record in (silent, dead_pid, spent, alive):
        store.claim(record.id, worker_id(), lease_s=60)
    store.update(silent.id, lambda r: setattr(r, "worker", "elsewhere:1") or True)
    store.redis.set(
        store.job_key(silent.id), store.get(silent.id).model_copy(update={"updated_at": now() - 600}).model_dump_json()
    )
    store.update(dead_pid.id, lambda r: setattr(r, "worker", f"{socket.gethostname()}:{_dead_pid()}") or True)
    store.update(spent.id, lambda r: setattr(r, "worker", "elsewhere:2") or setattr(r, "attempts", 3) or True)
    store.redis.set(store.job_key(spent.id), store.get(spent.id).model_copy(update={"updated_at": now() - 600}).model_dump_json())
    requeued = []
    recovered = store.recover_lost(lease_s=60, max_attempts=3, time_limit_s=3600, requeue=lambda r: requeued.append(r.id))
    assert sorted(recovered) == sorted([silent.id, dead_pid.id, spent.id])
    assert sorted(requeued) == sorted([silent.id, dead_pid.id])
    assert store.get(silent.id).status == JobStatus.queued and store.get(silent.id).worker is None
    assert store.get(spent.id).error.code == "worker_lost"
    assert store.get(alive.id).status == JobStatus.running  # this very process holds it
    store.request_cancel(silent.id, tenant="store-test")
    store.request_cancel(dead_pid.id, tenant="store-test")
    store.finish(alive.id, Fence(1, worker_id()), JobStatus.cancelled)


def _age(store: JobStore, job_id: str, seconds: float, **fields) -> None:
    """Make the record look untouched for ``seconds`` (and set ``fields``), bypassing the store."""
    aged = store.get(job_id).model_copy(update={"updated_at": now() - seconds, **fields})
    store.redis.set(store.job_key(job_id), aged.model_dump_json())


def test_a_lost_lease_fences_every_write(redis_url):
    """A frozen holder whose job was taken over can no longer write anything; the new holder can."""
    store = _store(redis_url)
    record = _new(store)
    first = store.claim(record.id, "elsewhere:1", lease_s=5)
    old = Fence(first.attempts, first.worker)
    store.set_progress(record.id, old, JobProgress(stage="merge", done=1, total=9))
    assert store.claim(record.id, "elsewhere:2", lease_s=5) is None  # the holder's lease is fresh
    _age(store, record.id, 10)  # the holder froze past its lease
    second = store.claim(record.id, "elsewhere:2", lease_s=5)
    assert (second.attempts, second.worker) == (2, "elsewhere:2")
    new = Fence(second.attempts, second.worker)
    for write in (
        lambda: store.refresh_lease(record.id, old),
        lambda: store.set_progress(record.id, old, JobProgress(stage="merge", done=9, total=9)),
        lambda: store.set_sources(record.id, old, []),
        lambda: store.cancel_requested(record.id, old),
        lambda: store.requeue(record.id, old, progress=JobProgress(stage="retry")),
        lambda: store.finish(record.id, old, JobStatus.succeeded),
    ):
        with pytest.raises(LeaseLostError):
            write()
    assert store.get(record.id).status == JobStatus.running and store.get(record.id).worker == "elsewhere:2"
    assert store.cancel_requested(record.id, new) is False  # nobody asked: no cancel, whatever the old holder saw
    done = store.finish(record.id, new, JobStatus.failed, error=JobError(code="x", message="y"))
    assert done.status == JobStatus.failed
    with pytest.raises(LeaseLostError):  # finished: the holder itself can write no more either
        store.set_progress(record.id, new, JobProgress(stage="merge"))


def test_cancel_is_only_a_request(redis_url):
    store = _store(redis_url)
    record = _new(store)
    claimed = store.claim(record.id, "elsewhere:3", lease_s=60)
    fence = Fence(claimed.attempts, claimed.worker)
    assert store.request_cancel(record.id, tenant="someone-else") is None
    assert store.cancel_requested(record.id, fence) is False
    assert store.request_cancel(record.id, tenant="store-test").cancel_requested
    assert store.cancel_requested(record.id, fence) is True
    store.finish(record.id, fence, JobStatus.cancelled)


def test_an_attempt_past_the_hard_time_limit_fails_instead_of_rerunning(redis_url):
    store = _store(redis_url)
    record = _new(store)
    store.claim(record.id, f"{socket.gethostname()}:{_dead_pid()}", lease_s=60)
    _age(store, record.id, 5, attempt_started_at=now() - 100)
    requeued = []
    store.recover_lost(lease_s=60, max_attempts=3, time_limit_s=90, requeue=lambda r: requeued.append(r.id))
    done = store.get(record.id)
    assert (done.status, done.error.code, requeued) == (JobStatus.failed, "time_limit_exceeded", [])


def test_shutdown_hand_back_refunds_the_attempt(redis_url):
    store = _store(redis_url)
    record = _new(store)
    store.claim(record.id, f"{socket.gethostname()}:{_dead_pid()}", lease_s=60)
    requeued = []
    store.recover_lost(
        lease_s=60, max_attempts=1, time_limit_s=3600, requeue=lambda r: requeued.append(r.id), refund_attempt=True
    )
    back = store.get(record.id)
    assert (back.status, back.attempts, requeued) == (JobStatus.queued, 0, [record.id])
    store.request_cancel(record.id, tenant="store-test")


def test_stranded_queued_jobs_get_a_new_message(redis_url):
    """A queued job whose message is in no queue (a Redis crash) is re-sent; one whose message waits, a
    young one, or one waiting out a retry delay is left alone."""
    store = _store(redis_url)
    stranded, waiting, young, retrying = (_new(store) for _ in range(4))
    for record in (stranded, waiting):
        _age(store, record.id, 100)
    _age(store, retrying.id, 100, not_before=now() + 60)
    sent = []
    store.recover_stranded(
        older_than_s=30, waiting=lambda queue: {waiting.id} if queue == "nowhere" else set(), requeue=lambda r: sent.append(r.id)
    )
    assert stranded.id in sent and not {waiting.id, young.id, retrying.id} & set(sent)
    assert store.get(stranded.id).progress.stage == "queued: message re-sent"
    sent.clear()  # touched when re-sent: not again at the next sweep
    store.recover_stranded(older_than_s=30, waiting=lambda queue: set(), requeue=lambda r: sent.append(r.id))
    assert stranded.id not in sent
    for record in (stranded, waiting, young, retrying):
        store.request_cancel(record.id, tenant="store-test")


def test_every_terminal_write_reaches_the_duration_histogram(redis_url):
    store = _store(redis_url)
    before = {s: store.durations(s)[0][-1][1] for s in (JobStatus.failed, JobStatus.cancelled)}
    lost, cancelled = _new(store), _new(store)
    store.claim(lost.id, "elsewhere:4", lease_s=60)
    _age(store, lost.id, 600)
    store.recover_lost(lease_s=60, max_attempts=1, time_limit_s=3600, requeue=lambda r: None)  # worker_lost
    store.request_cancel(cancelled.id, tenant="store-test")  # cancelled while queued
    after = {s: store.durations(s)[0][-1][1] for s in (JobStatus.failed, JobStatus.cancelled)}
    assert after[JobStatus.failed] >= before[JobStatus.failed] + 1
    assert after[JobStatus.cancelled] == before[JobStatus.cancelled] + 1


def test_tokens_are_scrubbed_from_the_aof_after_their_job(redis_server):
    store = _store(redis_server.url)
    marker = "sealed-token-marker-5b1c"
    record = _new(store)
    store.update(record.id, lambda r: setattr(r, "hub_token_enc", marker) or True)
    aof = redis_server.folder / "appendonly.aof"
    assert marker in aof.read_text(errors="replace")
    store.request_cancel(record.id, tenant="store-test")
    assert store.scrub_tokens() is True
    deadline = time.monotonic() + 20
    while marker in aof.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the AOF still holds the token"
        time.sleep(0.1)
    assert store.scrub_tokens() is False  # nothing new dropped since


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_last_page_has_no_next_cursor(redis_url):
    """Four jobs, two a page: the second page is the last (next_cursor None, never an empty third page);
    with a status filter, the cursor skips to the next job that matches."""
    store = _store(redis_url)
    tenant = f"paging-{time.monotonic_ns()}"
    created = {_new(store, tenant).id for _ in range(4)}
    ids = [r.id for r in store.list(tenant, status=None, limit=10, cursor=0)[0]]  # newest first
    assert set(ids) == created
    first, cursor = store.list(tenant, status=None, limit=2, cursor=0)
    assert [r.id for r in first] == ids[:2] and cursor == 2
    second, cursor = store.list(tenant, status=None, limit=2, cursor=cursor)
    assert [r.id for r in second] == ids[2:] and cursor is None
    assert store.list(tenant, status=None, limit=4, cursor=0)[1] is None
    assert store.list(tenant, status=None, limit=5, cursor=0)[1] is None
    store.request_cancel(ids[0], tenant=tenant)
    store.request_cancel(ids[3], tenant=tenant)
    queued, cursor = store.list(tenant, status=JobStatus.queued, limit=1, cursor=0)
    assert [r.id for r in queued] == [ids[1]] and cursor == 2
    queued, cursor = store.list(tenant, status=JobStatus.queued, limit=1, cursor=cursor)
    assert [r.id for r in queued] == [ids[2]] and cursor is None
