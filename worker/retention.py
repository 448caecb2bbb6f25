"""Retention for one worker node's data dir, so a busy service does not fill its disk.

Job records expire from Redis after ``LORAMERGE_FINISHED_JOB_TTL_S``; the files do not by themselves.
Each worker node runs this every ``LORAMERGE_RETENTION_INTERVAL_S`` (one node per data dir at a time,
under a file lock), in its own thread so a long deletion never delays the heartbeat:

- results (the local store): older than ``LORAMERGE_RESULT_MAX_AGE_S`` (default: the record TTL), then
  oldest first while over ``LORAMERGE_RESULT_MAX_BYTES``, and any a tenant purged whose deletion
  failed. A job not yet ended is never touched (its folder appears during publish). The job is marked
  ``purged_by: retention`` before its folder goes, so a client never downloads half a result.
- staging: folders of attempts that no longer run (a worker killed mid-job leaves one), after a grace.
- Hub cache: least recently used revisions while over ``LORAMERGE_HUB_CACHE_MAX_BYTES``; a revision a
  job used within ``LORAMERGE_JOB_TIME_LIMIT_S`` stays (no attempt lives longer), even over the bound.

Then it reports the node's disk use for ``/metrics`` (jobs.disk).
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound
from huggingface_hub.file_download import repo_folder_name

from jobs import disk
from jobs.records import JobRecord, JobStatus
from jobs.settings import Settings
from jobs.store import JobStore

log = logging.getLogger("loramerge.worker.retention")

STAGING_GRACE_S = 120.0  # a folder this fresh may belong to an attempt whose claim we have not read yet


def cache_use_dir(hub_cache_dir: Path) -> Path:
    """Markers of when each Hub cache revision was last used (beside the cache: huggingface_hub's
    scanner would take a folder inside it for a corrupt repo)."""
    return hub_cache_dir.with_name(hub_cache_dir.name + "-used")


def note_cache_use(hub_cache_dir: Path, repo_id: str, revision: str) -> None:
    """Record that a job uses ``repo_id@revision`` from the Hub cache now (before it reads it)."""
    folder = cache_use_dir(hub_cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{repo_folder_name(repo_id=repo_id, repo_type='model')}@{revision}").touch()


@dataclass
class _Result:
    folder: Path
    record: JobRecord | None
    ended: float
    size: int


class Retention:
    """One pass: ``run()``. ``start()`` runs a pass in a thread unless the last one is still going."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.name = f"{socket.gethostname()}:{settings.data_dir}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run_logged, name="loramerge-retention", daemon=True)
        self._thread.start()

    def _run_logged(self) -> None:
        try:
            self.run()
        except redis.RedisError as exc:
            log.warning("retention skipped: Redis unavailable (%s)", type(exc).__name__)
        except Exception:
            log.exception("retention failed")

    def run(self) -> dict[str, int] | None:
        """Apply retention and report disk use; returns what was removed by area (None: another process
        of this data dir holds the lock)."""
        with _node_lock(self.settings.data_dir / "retention.lock") as held:
            if not held:
                return None
            removed = {
                "staging": self.sweep_staging(),
                "results": self.sweep_results(),
                "hub_cache": self.sweep_hub_cache(),
            }
            for area, count in removed.items():
                disk.count_removed(self.store.redis, area, count)
            self.report()
            return removed

    # -- results ------------------------------------------------------------------------------------
    def sweep_results(self) -> int:
        settings = self.settings
        results = [entry for entry in map(self._result, _folders(settings.results_dir)) if entry is not None]
        results.sort(key=lambda entry: entry.ended)
        cutoff = time.time() - (settings.result_max_age_s or settings.finished_job_ttl_s)
        total = sum(entry.size for entry in results)
        removed = 0
        for entry in results:
            if entry.record is not None and entry.record.purged_at is not None:
                why = f"purged by {entry.record.purged_by}"
            elif entry.ended < cutoff:
                why = "past LORAMERGE_RESULT_MAX_AGE_S"
            elif settings.result_max_bytes and total > settings.result_max_bytes:
                why = "over LORAMERGE_RESULT_MAX_BYTES"
            else:
                continue
            if entry.record is not None and entry.record.purged_at is None:
                marked = self.store.mark_purged(entry.record.id, by="retention")
                if marked is None or marked.purged_at is None:
                    continue  # gone meanwhile, or not ended (cannot happen for a published result): leave it
            shutil.rmtree(entry.folder, ignore_errors=True)
            total -= entry.size
            removed += 1
            context = {"job_id": entry.folder.name}
            if entry.record is not None:
                context.update(tenant=entry.record.tenant, attempt=entry.record.attempts)
            log.info("result of job %s removed (%s, %d bytes)", entry.folder.name, why, entry.size, extra=context)
        return removed

    def _result(self, folder: Path) -> _Result | None:
        record = self.store.get(folder.name, patient=False)
        if record is not None and not record.status.terminal:
            return None  # publishing right now, or a job id reused by nothing else: never touched
        try:
            ended = record.finished_at if record is not None and record.finished_at else folder.stat().st_mtime
        except OSError:
            return None
        return _Result(folder, record, ended, disk.tree_bytes(folder))

    # -- staging --------------------------------------------------------------------------------------
    def sweep_staging(self) -> int:
        removed = 0
        fresh = time.time() - STAGING_GRACE_S
        for job_folder in _folders(self.settings.staging_dir):
            record = self.store.get(job_folder.name, patient=False)
            for attempt in _folders(job_folder):
                live = record is not None and record.status == JobStatus.running and str(record.attempts) == attempt.name
                if live or _mtime(attempt) > fresh:
                    continue
                shutil.rmtree(attempt, ignore_errors=True)
                removed += 1
                log.info(
                    "staging of job %s attempt %s removed (the attempt no longer runs)",
                    job_folder.name,
                    attempt.name,
                    extra={"job_id": job_folder.name, **({"tenant": record.tenant} if record else {})},
                )
            try:
                job_folder.rmdir()
            except OSError:
                pass  # a live attempt's folder is in it
        return removed

    # -- Hub cache ------------------------------------------------------------------------------------
    def sweep_hub_cache(self) -> int:
        bound = self.settings.hub_cache_max_bytes
        if not bound:
            return 0
        try:
            info = scan_cache_dir(self.settings.hub_cache_dir)
        except CacheNotFound:
            return 0
        size = info.size_on_disk
        if size <= bound:
            return 0
        markers = cache_use_dir(self.settings.hub_cache_dir)
        protected_since = time.time() - self.settings.job_time_limit_s
        candidates = []
        for repo in info.repos:
            folder = repo_folder_name(repo_id=repo.repo_id, repo_type=repo.repo_type)
            for revision in repo.revisions:
                marker = markers / f"{folder}@{revision.commit_hash}"
                used = max(_mtime(marker), revision.last_modified)
                candidates.append((used, revision, marker))
        candidates.sort(key=lambda c: c[0])
        evicted, markers_gone = [], []
        cache = self.settings.hub_cache_dir.resolve()
        for used, revision, marker in candidates:
            if size <= bound:
                break
            if used > protected_since:
                continue  # a job may still read it
            foreign = [f.file_path for f in revision.files if not Path(f.blob_path).resolve().is_relative_to(cache)]
            if foreign:  # huggingface_hub would unlink the link's target wherever it is: not ours to delete
                log.warning("Hub cache revision %s links out of the cache (%s): left alone", revision.snapshot_path, foreign[0])
                continue
            evicted.append(revision.commit_hash)
            markers_gone.append(marker)
            size -= revision.size_on_disk
        if size > bound:
            log.warning(
                "Hub cache holds %d bytes, over LORAMERGE_HUB_CACHE_MAX_BYTES=%d: the rest was used within the job time limit",
                size,
                bound,
            )
        if evicted:
            strategy = info.delete_revisions(*evicted)
            strategy.execute()
            for marker in markers_gone:
                marker.unlink(missing_ok=True)
            log.info(
                "Hub cache: %d least recently used revisions removed (%s freed)", len(evicted), strategy.expected_freed_size_str
            )
        return len(evicted)

    # -- disk use -------------------------------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        settings = self.settings
        usage = {
            "results": disk.tree_bytes(settings.results_dir),
            "staging": disk.tree_bytes(settings.staging_dir),
            "hub_cache": disk.tree_bytes(settings.hub_cache_dir),
        }
        try:
            fs = shutil.disk_usage(settings.data_dir)
            usage.update(free=fs.free, total=fs.total)
        except OSError:
            pass
        return usage

    def report(self) -> None:
        ttl = round(3 * self.settings.retention_interval_s + 60)
        disk.report(self.store.redis, self.name, self.usage(), ttl_s=ttl)


def _folders(parent: Path) -> list[Path]:
    try:
        return [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@contextmanager
def _node_lock(path: Path):
    """Held by one process per data dir at a time (an embedded serve runs several workers on one dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
