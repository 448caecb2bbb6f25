"""Result retention on a real Redis and real folders: results go by age, then oldest first by size, never
a job that has not ended; staging leftovers of attempts that no longer run; the Hub cache least recently
used first, never a revision used within the job time limit; one pass per data dir; disk use in /metrics."""

from __future__ import annotations

import os
import re
import time

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from jobs import events
from jobs.lease import Fence
from jobs.records import JobRecord, JobResult, JobStatus
from jobs.redis_server import RedisServer
from jobs.settings import Settings
from jobs.store import JobStore, connect
from worker.retention import Retention, _node_lock, cache_use_dir, note_cache_use

DAY = 24 * 3600


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("retention-redis"))
    url = server.start()
    yield url
    server.close()


@pytest.fixture
def settings(tmp_path, redis_url):
    return Settings(redis_url=redis_url, data_dir=tmp_path / "data", hub_cache_max_bytes=0)


@pytest.fixture
def store(settings):
    client = connect(settings.redis_url)
    client.flushdb()
    return JobStore(client, finished_ttl_s=settings.finished_job_ttl_s)


def _job(store: JobStore, settings: Settings, *, status=JobStatus.succeeded, ended_ago=0.0, size=1000) -> JobRecord:
    """A job with a result folder of ``size`` bytes, ended ``ended_ago`` seconds ago (or still running)."""
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="q"), max_queued=100)
    claimed = store.claim(record.id, "w:1", lease_s=60)
    folder = settings.results_dir / record.id
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * size)
    if status != JobStatus.running:
        result = JobResult(uri=folder.as_uri(), files=[], summary={})
        store.finish(record.id, Fence(claimed.attempts, "w:1"), status, result=result, finished_at=time.time() - ended_ago)
    return store.get(record.id)


def _old(path, seconds):
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_results_past_the_age_go_and_the_job_says_so(store, settings):
    old = _job(store, settings, ended_ago=8 * DAY)  # default age: the record TTL, 7 days
    recent = _job(store, settings, ended_ago=DAY)
    running = _job(store, settings, status=JobStatus.running)
    _old(settings.results_dir / running.id, 30 * DAY)
    orphan = settings.results_dir / "0123abcd"  # its record expired long ago
    orphan.mkdir()
    _old(orphan, 8 * DAY)

    assert Retention(store, settings).run() == {"staging": 0, "results": 2, "hub_cache": 0}
    assert not (settings.results_dir / old.id).exists() and not orphan.exists()
    assert (settings.results_dir / recent.id).exists() and (settings.results_dir / running.id).exists()
    purged = store.get(old.id)
    assert purged.purged_by == "retention" and purged.purged_at is not None and purged.status == JobStatus.succeeded
    assert store.get(recent.id).purged_at is None and store.get(running.id).purged_at is None
    logged, _ = events.read(store.redis, old.id, cursor=None, limit=100)
    assert logged[-1]["type"] == "job.purged" and logged[-1]["data"] == {"by": "retention"}


def test_over_the_size_bound_the_oldest_results_go_first(store, settings):
    bounded = settings.model_copy(update={"result_max_bytes": 2500})
    jobs = [_job(store, bounded, ended_ago=ago) for ago in (300, 100, 200)]
    assert Retention(store, bounded).run()["results"] == 1
    assert [(bounded.results_dir / job.id).exists() for job in jobs] == [False, True, True]


def test_a_result_the_tenant_purged_but_could_not_delete_is_removed(store, settings):
    job = _job(store, settings, ended_ago=60)
    store.mark_purged(job.id, by="tenant", tenant="t")
    Retention(store, settings).run()
    assert not (settings.results_dir / job.id).exists()
    assert store.get(job.id).purged_by == "tenant"


def test_staging_of_attempts_that_no_longer_run_is_removed(store, settings):
    running = _job(store, settings, status=JobStatus.running)  # attempt 1 holds the job
    live, stale = settings.staging_dir / running.id / "1", settings.staging_dir / running.id / "0"
    dead_job = settings.staging_dir / "deadbeef" / "3"  # no record: a crashed attempt of an expired job
    fresh = settings.staging_dir / "c0ffee" / "1"  # no record read yet: too fresh to judge
    for folder in (live, stale, dead_job, fresh):
        folder.mkdir(parents=True)
        (folder / "part").write_bytes(b"x")
    for folder in (live, stale, dead_job):
        _old(folder, 3600)
    assert Retention(store, settings).run()["staging"] == 2
    assert live.exists() and fresh.exists() and not stale.exists()
    assert not dead_job.parent.exists()  # the job folder goes once empty


def _cached_revision(cache, repo_id: str, sha: str, size: int, *, age_s: float) -> None:
    """One revision in huggingface_hub's cache layout: a blob and a snapshot that links to it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    blob = repo / "blobs" / f"blob{sha}"
    blob.write_bytes(b"\0" * size)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / "adapter_model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs" / "main").write_text(sha)
    for path in (blob, snapshot):
        _old(path, age_s)


def test_the_hub_cache_drops_the_least_recently_used_revision_but_never_a_recent_one(store, settings):
    bounded = settings.model_copy(update={"hub_cache_max_bytes": 2500, "job_time_limit_s": 3600})
    cache = bounded.hub_cache_dir
    for repo, sha in (("org/used-long-ago", "a" * 40), ("org/used-lately", "b" * 40), ("org/used-now", "c" * 40)):
        _cached_revision(cache, repo, sha, 1000, age_s=10 * DAY)
        note_cache_use(cache, repo, sha)
    markers = cache_use_dir(cache)
    _old(markers / f"models--org--used-long-ago@{'a' * 40}", 3 * DAY)
    _old(markers / f"models--org--used-lately@{'b' * 40}", 2 * DAY)

    assert Retention(store, bounded).run()["hub_cache"] == 1
    assert not (cache / "models--org--used-long-ago").exists()
    assert (cache / "models--org--used-lately").exists() and (cache / "models--org--used-now").exists()

    tighter = bounded.model_copy(update={"hub_cache_max_bytes": 500})  # over the bound, but one is in use
    assert Retention(store, tighter).run()["hub_cache"] == 1
    assert not (cache / "models--org--used-lately").exists() and (cache / "models--org--used-now").exists()


def test_one_pass_per_data_dir_at_a_time(store, settings):
    with _node_lock(settings.data_dir / "retention.lock") as held:
        assert held
        assert Retention(store, settings).run() is None


def _gauge(text: str, name: str, **labels) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts labels by name
    match = re.search(rf"^{name}{{{re.escape(label)}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{label}}} not in /metrics"
    return float(match[1])


def test_disk_use_of_each_data_dir_is_in_metrics(store, settings):
    _job(store, settings, ended_ago=8 * DAY, size=4000)
    kept = _job(store, settings, ended_ago=60, size=3000)
    retention = Retention(store, settings)
    retention.run()
    text = TestClient(create_app(settings)).get("/metrics").text
    assert _gauge(text, "loramerge_disk_usage_bytes", data_dir=retention.name, area="results") == 3000
    assert _gauge(text, "loramerge_disk_usage_bytes", data_dir=retention.name, area="staging") == 0
    assert _gauge(text, "loramerge_disk_free_bytes", data_dir=retention.name) > 0
    assert _gauge(text, "loramerge_retention_removed_total", area="results") == 1
    assert (settings.results_dir / kept.id).exists()


def test_a_cache_revision_that_links_out_of_the_cache_is_left_alone(store, settings, tmp_path):
    """huggingface_hub's delete would unlink a planted link's target wherever it is."""
    bounded = settings.model_copy(update={"hub_cache_max_bytes": 100, "job_time_limit_s": 60})
    cache = bounded.hub_cache_dir
    victim = tmp_path / "outside" / "victim.bin"
    victim.parent.mkdir()
    victim.write_bytes(b"\0" * 1000)
    snapshot = cache / "models--acme--lora" / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--acme--lora" / "blobs").mkdir()
    (cache / "models--acme--lora" / "refs").mkdir()
    (snapshot / "adapter_model.safetensors").symlink_to(victim)
    for path in (snapshot, victim):
        _old(path, 3 * DAY)  # old enough to evict: only the check of where its files lie keeps it
    assert Retention(store, bounded).run()["hub_cache"] == 0
    assert victim.exists() and snapshot.exists()


def test_bad_retention_settings_are_refused():
    from pydantic import ValidationError

    for bad in ({"retention_interval_s": float("inf")}, {"retention_interval_s": 0}, {"result_max_bytes": "abc"}):
        with pytest.raises(ValidationError):
            Settings(**bad)
    assert Settings(result_max_bytes="1.5GiB").result_max_bytes == 1610612736
