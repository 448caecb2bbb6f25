"""The one Celery task: thin, like a web view. Logic lives in worker.runner.

The runner records every outcome itself, through the attempt's fence; the task only turns a
transient error (the job is already back in ``queued``) into a Celery retry with the runner's delay.
"""

from __future__ import annotations

import functools

from jobs.queue import RUN_MERGE_TASK, send_deliveries
from jobs.settings import get_settings
from jobs.store import JobStore, connect
from worker.celery_app import app
from worker.runner import JobRunner, RetryLater


@functools.lru_cache
def job_runner() -> JobRunner:
    settings = get_settings()
    store = JobStore(
        connect(settings.redis_url),
        finished_ttl_s=settings.finished_job_ttl_s,
        outage_grace_s=settings.redis_outage_grace_s,
        progress_event_interval_s=settings.webhook_progress_interval_s,
        on_deliveries=lambda ids: send_deliveries(app, settings, ids),
    )
    return JobRunner(store, settings)


@app.task(name=RUN_MERGE_TASK, bind=True, max_retries=None)
def run_job(self, job_id: str) -> str | None:
    """One delivery of a job's message (the wire name stays ``loramerge.run_merge``: queued messages keep working)."""
    try:
        status = job_runner().run(job_id)
    except RetryLater as retry:
        raise self.retry(countdown=retry.delay_s, exc=retry.cause) from None
    return status.value if status else None
