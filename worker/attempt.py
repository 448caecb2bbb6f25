"""One claimed attempt at a job: its fence, its lease, and every write it makes to the record.

The pipeline (worker.runner) does the work; this object is the only way it talks to the JobStore,
so every write is fenced (jobs.lease). A keeper thread refreshes the lease and watches for a cancel
request: the merge notices a cancel at its next check (batch boundary, orthogonalization steps);
if it has not stopped ``cancel_grace_s`` later (a long single operation), the keeper records the job
cancelled and ends the worker process, which Celery replaces. A frozen holder that wakes up after
another worker took its job over raises LeaseLostError at its next write or check, and abandons.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import redis

from jobs.heartbeat import PROCESS_PREFIX
from jobs.lease import Fence, LeaseLostError
from jobs.records import JobProgress, JobRecord, JobStatus, PinnedSource
from jobs.settings import Settings
from jobs.store import JobStore

log = logging.getLogger("loramerge.worker")


class Attempt:
    def __init__(self, store: JobStore, record: JobRecord, settings: Settings, staging: Path) -> None:
        self.store, self.settings, self.staging = store, settings, Path(staging)
        self.job_id = record.id
        self.fence = Fence(attempt=record.attempts, worker=record.worker or "")
        self.stage = "fetch"  # fetch, merge, publish: the keeper never kills a publishing attempt
        self.lost = threading.Event()
        self.cancel_seen_at: float | None = None
        self._stop = threading.Event()
        self._last_progress = 0.0
        self._last_stage: str | None = None
        self._keeper = threading.Thread(  # in the job's logging context (jobs.logs): its lines name the job
            target=contextvars.copy_context().run, args=(self._keep,), name=f"lease-{record.id[:8]}", daemon=True
        )

    # -- lease keeper -------------------------------------------------------------------------
    def __enter__(self) -> Attempt:
        self._keeper.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _keep(self) -> None:
        refresh_every = self.settings.job_lease_s / 4
        last_refresh = time.monotonic()
        while not self._stop.wait(min(1.0, refresh_every)):
            try:
                if time.monotonic() - last_refresh >= refresh_every:
                    cancel = self.store.refresh_lease(self.job_id, self.fence).cancel_requested
                    last_refresh = time.monotonic()
                else:
                    cancel = self.store.cancel_requested(self.job_id, self.fence)
            except LeaseLostError as exc:
                log.warning("%s; abandoning the attempt at its next check", exc)
                self.lost.set()
                return
            except redis.RedisError:
                continue  # Redis restarting: the lease survives lease_s of silence
            if cancel:
                self._watch_cancel()

    def _watch_cancel(self) -> None:
        moment = time.monotonic()
        if self.cancel_seen_at is None:
            self.cancel_seen_at = moment
        overdue = moment - self.cancel_seen_at > self.settings.cancel_grace_s
        if not overdue or self.stage == "publish" or self._stop.is_set():
            return
        try:
            self.store.finish(self.job_id, self.fence, JobStatus.cancelled, progress=JobProgress(stage="cancelled"))
        except (LeaseLostError, redis.RedisError):
            return
        log.warning(
            "job %s: cancel not honoured within %.0f s (stage %s); recorded cancelled, ending this worker process",
            self.job_id,
            self.settings.cancel_grace_s,
            self.stage,
        )
        self.discard_staging()
        try:  # /readyz should not count this process for the rest of its heartbeat's TTL
            self.store.redis.delete(f"{PROCESS_PREFIX}{self.fence.worker}")
        except redis.RedisError:
            pass
        logging.shutdown()
        os._exit(3)  # Celery's parent starts a new process; the redelivered message finds the job cancelled

    # -- the pipeline's writes ------------------------------------------------------------------
    def check(self) -> None:
        """Raise LeaseLostError if the keeper saw the lease go."""
        if self.lost.is_set():
            raise LeaseLostError(self.job_id, self.fence, None, why="the lease keeper saw the job taken over")

    def progress(self, stage: str, done: int, total: int) -> None:
        """Throttled within a stage and best effort: a Redis outage must not abort a merge over a progress
        line. A new stage is always written: dropped, the job would show the stage before it for as long as
        the new one lasts (``publish``, the last, would never show)."""
        self.check()
        moment = time.monotonic()
        same_stage = stage == self._last_stage
        if same_stage and done < total and moment - self._last_progress < self.settings.progress_interval_s:
            return
        self._last_progress, self._last_stage = moment, stage
        try:
            self.store.set_progress(self.job_id, self.fence, JobProgress(stage=stage, done=done, total=total))
        except redis.RedisError:
            log.warning("job %s: progress not recorded (Redis unavailable)", self.job_id)

    def should_cancel(self) -> bool:
        """Asked by the merge at each check point; True once the keeper has seen a client's cancel
        request (it reads the record every second), so the merge itself never waits on Redis here."""
        self.check()
        return self.cancel_seen_at is not None

    def set_sources(self, sources: list[PinnedSource]) -> None:
        self.check()
        self.store.set_sources(self.job_id, self.fence, sources)

    def set_base_model(self, base_model: PinnedSource) -> None:
        self.check()
        self.store.set_base_model(self.job_id, self.fence, base_model)

    def before_publish(self) -> None:
        """The last check before anything leaves staging: this attempt still holds the job."""
        self.check()
        self.stage = "publish"
        self.store.refresh_lease(self.job_id, self.fence, patient=True)
        self.progress("publish", 0, 1)

    def finish(self, status: JobStatus, **changes) -> JobStatus:
        """Record the end. The attempt's staging goes first, so a client that sees the job ended
        finds none of its files left (nothing of a cancelled or failed job, only the result)."""
        self.discard_staging()
        self.store.finish(self.job_id, self.fence, status, **changes)
        return status

    def discard_staging(self) -> None:
        """This attempt's folder, and the job's folder once no attempt has one."""
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            self.staging.parent.rmdir()
        except OSError:
            pass  # another attempt's folder is still there, or it is already gone

    def requeue(self, *, progress: JobProgress, not_before: float) -> None:
        self.store.requeue(self.job_id, self.fence, progress=progress, not_before=not_before)
