"""The one Celery task: thin, like a web view. Logic lives in worker.runner.

Transient source errors are retried with exponential backoff (the job goes back to ``queued`` in its
record); anything unexpected fails the job with ``internal_error`` so no record stays ``running``.
"""

from __future__ import annotations

import functools
import logging

from celery.exceptions import SoftTimeLimitExceeded

from jobs.queue import RUN_MERGE_TASK
from jobs.records import JobError, JobProgress, JobStatus
from jobs.store import JobStore, connect
from worker.celery_app import app, settings
from worker.errors import TransientError
from worker.runner import JobRunner

log = logging.getLogger("loramerge.worker")
OUTAGE_GRACE_S = 120.0  # a Redis restart shorter than this does not lose a finished job's outcome


@functools.lru_cache
def runner() -> JobRunner:
    store = JobStore(connect(settings.redis_url), finished_ttl_s=settings.finished_job_ttl_s, outage_grace_s=OUTAGE_GRACE_S)
    return JobRunner(store, settings)


@app.task(name=RUN_MERGE_TASK, bind=True, max_retries=None)
def run_merge_job(self, job_id: str) -> str | None:
    jobs = runner()
    try:
        status = jobs.run(job_id)
    except TransientError as exc:
        record = jobs.store.get(job_id)
        attempts = record.attempts if record else settings.max_attempts
        if attempts >= settings.max_attempts:
            jobs.fail(job_id, exc.code, f"{exc.message} (gave up after {attempts} attempts)")
            return JobStatus.failed.value
        delay = settings.retry_backoff_s * 2 ** (attempts - 1)
        jobs.store.transition(
            job_id,
            JobStatus.queued,
            allowed_from={JobStatus.running},
            progress=JobProgress(stage=f"retrying in {delay:.0f} s: {exc.code}"),
        )
        log.warning("job %s: transient %s, retry %d in %.1f s", job_id, exc.code, attempts, delay)
        raise self.retry(countdown=delay, exc=exc) from None
    except SoftTimeLimitExceeded:
        jobs.fail(
            job_id,
            "time_limit_exceeded",
            f"the job ran past {settings.job_soft_time_limit_s} s (LORAMERGE_JOB_SOFT_TIME_LIMIT_S)",
        )
        return JobStatus.failed.value
    except Exception as exc:
        log.exception("job %s: unexpected error", job_id)
        jobs.store.transition(
            job_id,
            JobStatus.failed,
            allowed_from={JobStatus.queued, JobStatus.running},
            error=JobError(code="internal_error", message=f"unexpected {type(exc).__name__}; the worker log has the details"),
        )
        return JobStatus.failed.value
    return status.value if status else None
